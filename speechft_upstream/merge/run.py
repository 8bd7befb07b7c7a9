"""The merge command: θ̂ = θ0 + α·τ, one tensor at a time, written in θ0's converted format.

Data flows one way: stream.Source (inputs, memory-mapped) → methods (arithmetic) →
stream.StreamWriter (outputs). All outputs of one run (one per α) share the single pass over the
inputs, and either all of them appear or none does.
"""

import signal
import threading
from pathlib import Path

import torch

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.merge import config as merge_config
from speechft_upstream.merge import methods
from speechft_upstream.checkpoints.stream import Source, StreamWriter

PROVENANCE_KEY = "speechft_provenance"

# Heads that score pre-training targets (HuBERT's cluster embeddings, wav2vec 2.0's quantizer):
# the upstream never uses them and a fine-tuning run may still move them, so θ̂ keeps θ0's
# values, as the authors' merge does. mask_emb also serves only masked pre-training, but s3prl's
# experts never mask, so θ′ leaves it as θ0 had it; it is merged like the rest, which keeps θ̂
# equal, bit for bit, to θ0 + α·mean(θ′ − θ0) outside these heads.
PRETRAINING_ONLY = {
    "hubert": ("final_proj.", "label_embs_concat", "target_glu."),
    "wav2vec2": ("final_proj.", "project_q.", "quantizer.", "target_glu."),
    "wavlm": ("final_proj.", "label_embs_concat"),
    "decoar2": (),
}


def keeps_base(name, family):
    return any(name == p or name.startswith(p) for p in PRETRAINING_ONLY.get(family, ()))


def _resolve_base(path):
    if "://" not in path:
        return path
    # the authors' configs name no file for the stock θ0: fetch s3prl's converted checkpoint,
    # through s3prl's own cache, as their code does
    from s3prl.util.download import _urls_to_filepaths

    try:
        return _urls_to_filepaths(path, refresh=False)
    except Exception as err:  # noqa: BLE001 - any download failure is one line for the user
        raise SpeechFTError(f"{path}: could not download the base checkpoint ({type(err).__name__}: "
                            f"{str(err).splitlines()[0] if str(err) else ''}); set base_model_ckpt_path "
                            "or --base to a local file") from None


def _first_difference(base, ft):
    """How θ′'s parameters first differ from θ0's, walking θ0's order; None if names and shapes agree."""
    for name, tensor in base.weights.items():
        if name not in ft.weights:
            return f"has no parameter {name!r}, which θ0 {base.path} has (shape {tuple(tensor.shape)})"
        other = ft.weights[name]
        if other.shape != tensor.shape:
            return (f"parameter {name!r} has shape {tuple(other.shape)} but in θ0 {base.path} "
                    f"it has shape {tuple(tensor.shape)}")
    extra = next((n for n in ft.weights if n not in base.weights), None)
    if extra is not None:
        return (f"has parameter {extra!r} (shape {tuple(ft.weights[extra].shape)}), "
                f"which θ0 {base.path} lacks")
    return None


def _check_compatible(base, finetuned):
    """Same family, parameter names and shapes as θ0 in every θ′, before any output is created."""
    for ft in finetuned:
        difference = _first_difference(base, ft)
        if ft.family is not None and ft.family != base.family:
            detail = f"; first difference: it {difference}" if difference else ""
            raise SpeechFTError(f"{ft.path}: is a {ft.family} checkpoint but θ0 {base.path} is "
                                f"{base.family}{detail}")
        if difference:
            raise SpeechFTError(f"{ft.path}: {difference}: not the same architecture")


def _n_layers(weights):
    indices = {methods.layer_index(n) for n in weights}
    indices.discard(None)
    return max(indices) + 1 if indices else 0


def _provenance(spec, base, finetuned, alpha, layer_alphas, counts):
    from speechft_upstream import __version__

    record = {
        "tool": "speechft", "version": __version__, "method": spec.method, "alpha": alpha,
        "layer_alpha": layer_alphas, "weights": spec.weights, "density": spec.density,
        "seed": spec.seed if spec.method in methods.SEEDED else None, "family": base.family,
        "base": {"path": str(base.path.resolve()), "sha256": base.sha256.result()},
        "finetuned": [{"path": str(f.path.resolve()), "sha256": f.sha256.result(), "kind": f.kind}
                      for f in finetuned],
        "kept_from_base": counts["kept"], "copied_unchanged": len(counts["copied"]),
        "merged": len(counts["merged"]), **spec.source,
    }
    record.update({k: getattr(spec, k) for k in ("gamma", "epsilon", "offdiag_scale") if getattr(spec, k) is not None})
    if spec.audio is not None:
        record["audio"] = {"path": str(Path(spec.audio).resolve()), "max_seconds": spec.max_seconds}
    if isinstance(base.top.get(PROVENANCE_KEY), dict):
        record["base_provenance"] = base.top[PROVENANCE_KEY]  # merging a merged model
    return record


def _check_finite(tensor, path, name):
    if not methods.is_finite(tensor):
        raise SpeechFTError(f"{path}: weight {name!r} holds NaN or Inf values")


def _merge_tensor(spec, name, t0, inputs, base, finetuned, alphas, options, ws, write):
    """Merge one parameter and ``write(j, tensor)`` the result for each α; returns what was done.

    Each pass over a tensor costs about as much as reading it, so the checks ride on work done
    anyway: equality is decided from the first entries for fine-tuned tensors, and for methods
    that propagate NaN/Inf a finite result proves finite inputs; the inputs are checked one by
    one only to name the culprit, or where a method could hide a NaN.
    """
    def check_inputs():
        _check_finite(t0, base.path, name)
        for ft, t in zip(finetuned, inputs):
            _check_finite(t, ft.path, name)

    if keeps_base(name, base.family) or not t0.is_floating_point():
        check_inputs()
        done, results = "kept", [t0] * len(alphas)
    elif all(t.dtype == t0.dtype and _equal(t, t0) for t in inputs):  # False where NaN
        done, results = "copied", [t0] * len(alphas)
    else:
        if spec.method not in methods.PROPAGATES_NONFINITE:
            check_inputs()
        results, bad = methods.merge_into(spec.method, t0, inputs, alphas, ws, name=name, **options)
        if bad is not None:
            check_inputs()
            raise SpeechFTError(f"{spec.outputs[bad]}: merged weight {name!r} (α = {alphas[bad]:g}) holds NaN "
                                "or Inf values; the inputs are finite, so α or the weights are too large")
        done = "merged"
    for j, result in enumerate(results):
        write(j, result)
    return done


def _equal(a, b):
    """torch.equal, but answering from the first few entries when they differ: torch.equal reads
    both tensors to the end even then, a full pass for every fine-tuned tensor."""
    head = min(a.numel(), 256)
    return torch.equal(a.reshape(-1)[:head], b.reshape(-1)[:head]) and torch.equal(a, b)


class _TermAsExit:
    """SIGTERM unwinds like Ctrl-C, so the temporary outputs are removed on the way out."""

    def __enter__(self):
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise SystemExit(128 + signum)

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


def merge(spec, progress=True):
    """Run ``spec`` (a config.MergeSpec); returns the written paths, one per α."""
    # One intra-op thread: the arithmetic is memory-bound, so a second thread gains little, while
    # every parallel op has to wake it, which on a busy machine can wait out a whole scheduler
    # slice (measured: ~5 ms per op on 2 loaded cores, most of the merge). The hashing thread
    # keeps the other core busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _merge(spec, progress)
    finally:
        torch.set_num_threads(threads)


def _merge(spec, progress):
    base = Source(_resolve_base(spec.base), allow_runner=False)
    if spec.family is not None and base.family != spec.family:
        raise SpeechFTError(f"{base.path}: is a {base.family} checkpoint, but the config names {spec.family}")
    finetuned = [Source(p, allow_runner=True) for p in spec.finetuned]
    _check_compatible(base, finetuned)
    layer_alphas = merge_config.resolve_layer_alphas(spec, _n_layers(base.weights), base.path)
    from speechft_upstream.merge import align, repair

    extra = align.align_inputs(spec, base, finetuned, progress) if spec.align_audio else {}
    options = dict(weights=spec.weights, density=spec.density, seed=spec.seed, gamma=spec.gamma,
                   epsilon=spec.epsilon)
    if spec.method == "regmean":
        from speechft_upstream.merge import regmean_stats

        options["stats"] = regmean_stats.collect(base, finetuned, spec.audio, spec.offdiag_scale,
                                                 spec.max_seconds, progress=progress)

    from tqdm import tqdm

    total = sum(t.numel() * t.element_size() for t in base.weights.values())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="merging", disable=None if progress else True)
    writers, counts, ws = [], {"kept": [], "copied": [], "merged": []}, methods.Workspace()
    with _TermAsExit():
        try:
            writers = [StreamWriter(path) for path in spec.outputs]
            refs = [{} for _ in writers]
            held = [{} for _ in writers] if spec.repair_audio else None  # REPAIR needs whole models
            for name, t0 in base.weights.items():
                inputs = [ft.weights[name] for ft in finetuned]
                alphas = [methods.alpha_for(name, a, layer_alphas) for a in spec.alphas]

                def write(j, tensor):
                    if held is not None:
                        held[j][name] = tensor.clone()
                    else:
                        refs[j][name] = writers[j].add(tensor)

                done = _merge_tensor(spec, name, t0, inputs, base, finetuned, alphas, options, ws, write)
                options.get("stats", {}).pop(name, None)  # RegMean's Grams: freed once used
                counts[done].append(name)
                base.release(t0)
                for ft, t in zip(finetuned, inputs):
                    ft.release(t)
                bar.update(t0.numel() * t0.element_size())
            bar.close()
            if held is not None:
                extra["repair"] = repair.repair_outputs(spec, base, finetuned, held, refs, writers, progress)
            weight_key = "model_weight" if base.family in ("hubert", "wav2vec2") else "model"
            for writer, ref, alpha in zip(writers, refs, spec.alphas):
                top = dict(base.top)
                top[weight_key] = ref
                top[PROVENANCE_KEY] = dict(_provenance(spec, base, finetuned, alpha, layer_alphas, counts), **extra)
                writer.finish(top)
            return [writer.commit() for writer in writers]
        except BaseException:
            bar.close()
            for writer in writers:
                writer.abort()
            raise


def _register_names(spec):
    if not spec.register:
        return []
    if len(spec.outputs) == 1:
        return [spec.register]
    return [f"{spec.register}_alpha{alpha:g}".replace(".", "p").replace("-", "m") for alpha in spec.alphas]


def _check_register(names, force):
    """Refuse a name registration would refuse, before minutes of merging rather than after."""
    from speechft_upstream.upstream import registry

    taken, entries = registry._taken_names(), registry.read()
    for name in names:
        if name in taken:
            raise SpeechFTError(f"{name!r}: already an s3prl or speechft upstream name; choose another")
        if name in entries and not force:
            raise SpeechFTError(f"{name!r}: already registered for {entries[name]['path']} (use --force to replace)")


def run(options, config=None, progress=True):
    """The `speechft merge` command: build and check the spec, merge, optionally register."""
    spec = merge_config.build(options, config)
    names = _register_names(spec)
    if names:
        _check_register(names, spec.force)
    written = merge(spec, progress=progress)
    if names:
        from speechft_upstream.upstream import registry

        for path, name in zip(written, names):
            registry.add(name, path, force=spec.force)
    return spec, written, names


def describe(spec, written, registered):
    lines = []
    for path, alpha in zip(written, spec.alphas):
        lines.append(f"wrote {path} ({spec.method}, α = {alpha:g}, from {len(spec.finetuned)} fine-tuned)")
    for name in registered:
        lines.append(f"registered upstream {name!r} (use -u {name} in s3prl's runner)")
    return "\n".join(lines)
