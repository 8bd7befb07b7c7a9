"""`speechft align`: permute B's hidden units to match A's, keeping B's function.

Per merge point, the correlation of A's and B's standardised unit activations on unlabelled
audio (align_stats) is matched with the Hungarian algorithm; attention heads are assigned by
their summed within-head matchings (Verma & Elbayad 2024). The permutations go to
permute.py, which applies them; the result is written in B's converted format, streamed.
"""

import sys

import torch

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.merge import align_stats as stats
from speechft_upstream.merge import permute

POINTS = ("cnn", "ffn", "attn", "residual")
DEFAULT_POINTS = ("cnn", "ffn", "attn")
SUPPORTED = {"hubert": POINTS, "wav2vec2": POINTS, "wavlm": ("cnn", "ffn")}


def parse_points(text, origin="--points"):
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")  # YAML may give a list
    points = tuple(str(p).strip() for p in items if str(p).strip())
    unknown = [p for p in points if p not in POINTS]
    if unknown or not points:
        raise SpeechFTError(f"{origin}: {', '.join(unknown) or repr(text)} is not a merge point "
                            f"(choose from {', '.join(POINTS)})")
    return points


def _lsa(matrix):
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(matrix.numpy(), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long), float(matrix.numpy()[rows, cols].sum())


def match_blocks(matrices, groups):
    """Assign ``groups`` equal blocks of units, scored by the sum of their within-block matchings
    in every matrix; returns (block perm, [full-width index per matrix])."""
    n = matrices[0].shape[0]
    size = n // groups
    scores = torch.zeros(groups, groups, dtype=torch.float64)
    within = [[[None] * groups for _ in range(groups)] for _ in matrices]
    for m, matrix in enumerate(matrices):
        for a in range(groups):
            for b in range(groups):
                block = matrix[a * size:(a + 1) * size, b * size:(b + 1) * size]
                within[m][a][b], score = _lsa(block)
                scores[a, b] += score
    blocks, _ = _lsa(scores)
    return blocks, [permute.head_index(blocks, [within[m][a][blocks[a]] for a in range(groups)], size)
                    for m in range(len(matrices))]


def _summary(corr, perm):
    n = corr.shape[0]
    return {"units": n, "moved": int((perm != torch.arange(n)).sum()),
            "corr_before": round(float(corr.diagonal().mean()), 4),
            "corr_after": round(float(corr[torch.arange(n), perm].mean()), 4)}


def check_pair(a, b):
    """Same family, parameter names, shapes and head / group counts; raises one line otherwise."""
    from speechft_upstream.merge.run import _first_difference

    if a.family != b.family:
        raise SpeechFTError(f"{b.path}: is a {b.family} checkpoint but the reference {a.path} is {a.family}")
    difference = _first_difference(a, b)
    if difference:
        raise SpeechFTError(f"{b.path}: {difference.replace('θ0', 'the reference')}: not the same architecture")
    if a.family in SUPPORTED and stats.settings(a.top, a.family) != stats.settings(b.top, b.family):
        raise SpeechFTError(f"{b.path}: its attention heads or pos_conv groups differ from the reference {a.path}'s")


def check_points(family, points, path):
    if family not in SUPPORTED:
        raise SpeechFTError(f"{path}: alignment supports hubert, wav2vec2 and wavlm checkpoints, not {family}")
    refused = [p for p in points if p not in SUPPORTED[family]]
    if refused:
        raise SpeechFTError(f"{path}: WavLM's gated relative position bias reads each head's slice of the "
                            f"unprojected layer input, so {' and '.join(refused)} cannot be permuted without "
                            "changing its function; use --points cnn,ffn (speechft merge: --align-points cnn,ffn)")


def compute_spec(a, b, audio, points, max_seconds=None, say=None, warn=None):
    """The permutation spec aligning Source ``b`` to Source ``a``, and its summary per point."""
    say = say or (lambda m: None)
    warn = warn or (lambda m: print(f"speechft: warning: {m}", file=sys.stderr))
    family = a.family
    cfg = stats.settings(a.top, family)
    layout = permute.layout_of(a.weights, cfg["heads"], cfg["pos_groups"])
    # both built from A's configuration: B may be a runner checkpoint, which carries none
    models = [stats.Stages(stats.build_model(a.top, family, s.weights), family) for s in (a, b)]
    chunks = stats.pieces(audio, max_seconds)
    say(f"aligning on {len(chunks)} audio pieces, {sum(c.shape[1] for _, c in chunks) / stats.SAMPLE_RATE:.1f} s")
    xs = [[c for _, c in chunks] for _ in models]
    spec, summary, residual = {}, {}, None
    for stage in models[0].names:
        wanted = _stage_points(stage, points, layout)
        accumulators = {}
        for c, (label, _) in enumerate(chunks):
            outs = []
            for m, (model, source) in enumerate(zip(models, (a, b))):
                xs[m][c], got = model.run(stage, xs[m][c], wanted)
                for point, value in got.items():
                    stats.check_finite(value, source.path, f"{point} on {label}")
                outs.append(got)
            for point in outs[0]:
                for key, fa in _features(outs[0][point]):
                    fb = dict(_features(outs[1][point]))[key]
                    acc = accumulators.setdefault((point, key), stats.CrossCorrelation(fa.shape[1]))
                    acc.update(fa, fb)
        if stage == "prelude":
            frames = sum(x.shape[0] for x in xs[0])
            _check_frames(frames, points, layout, audio)
        result = _finish_stage(accumulators, layout, warn, b.path)
        for point, (perm, info) in result.items():
            if point.startswith("resid."):
                residual = perm if residual is None else residual + perm  # summed correlations
            else:
                spec[point], summary[point] = perm, info
        _release_stage(stage, a, b)
        stats.trim_heap()
        say(f"  {stage}: matched {', '.join(p for p in result if not p.startswith('resid.')) or '-'}")
    if residual is not None:
        blocks, (perm,) = match_blocks([residual], layout["pos_groups"])
        spec["residual"] = perm
        summary["residual"] = dict(_summary(residual / (len(models[0].names)), perm),
                                   groups_moved=int((blocks != torch.arange(blocks.numel())).sum()))
    return spec, summary, layout


def _stage_points(stage, points, layout):
    wanted = []
    if stage == "prelude":
        if "cnn" in points:
            last_ok = layout["post_extract_proj"]  # else the last conv feeds the residual stream
            wanted += [f"cnn.{i}" for i in range(layout["n_conv"]) if i + 1 < layout["n_conv"] or last_ok]
    else:
        l = stage.split(".")[1]
        wanted += [f"{p}.{l}" for p in ("attn", "ffn") if p in points]
    if "residual" in points:
        wanted.append(f"resid.{stage}")
    return wanted


def _features(value):
    return value.items() if isinstance(value, dict) else [("", value)]


def _check_frames(frames, points, layout, audio):
    needs = [("ffn", max(layout["ffn"]))] if "ffn" in points else []
    needs += [(p, layout["dim"]) for p in ("attn", "residual") if p in points]
    for point, units in needs:
        if frames <= units:
            raise SpeechFTError(f"{audio}: {frames} encoder frames of audio, fewer than the {units} units to "
                                f"match at {point}; give more than {units * 320 / stats.SAMPLE_RATE:.1f} s (several times that "
                                "for stable matches)")


def _finish_stage(accumulators, layout, warn, path):
    out, corr = {}, {}
    for (point, key), acc in accumulators.items():
        if acc.count <= acc.sa.numel():
            raise SpeechFTError(f"{path}: {acc.count} frames at {point}, fewer than its {acc.sa.numel()} units")
        corr[(point, key)], dead_a, dead_b = acc.correlation()
        for who, dead in (("reference", dead_a), ("model", dead_b)):
            if dead:
                shown = ", ".join(map(str, dead[:10])) + (f", … ({len(dead)} in all)" if len(dead) > 10 else "")
                warn(f"{path}: {who}'s units {shown} at {point}{'.' + key if key else ''} do not vary on this "
                     "audio; matched with an epsilon variance")
    for (point, key), matrix in corr.items():
        if point.startswith("attn."):
            if key != "o":
                continue
            qk = corr[(point, "q")] + corr[(point, "k")]
            heads, (qk_index, v_index) = match_blocks([qk, matrix], layout["heads"])
            out[point] = ({"qk": qk_index, "v": v_index},
                          dict(_summary(matrix, v_index), heads_moved=int((heads != torch.arange(heads.numel())).sum())))
        elif point.startswith("resid."):
            out[point] = (matrix, None)
        else:
            perm, _ = _lsa(matrix)
            out[point] = (perm, _summary(matrix, perm))
    return out


def _release_stage(stage, *sources):
    prefix = "feature_extractor." if stage == "prelude" else f"encoder.layers.{stage.split('.')[1]}."
    for source in sources:
        for name, tensor in source.weights.items():
            if name.startswith(prefix):
                source.release(tensor)


def write_aligned(b, spec, layout, output, record):
    """B's checkpoint with ``spec`` applied, streamed to ``output`` in B's converted format."""
    from speechft_upstream.checkpoints.stream import StreamWriter
    from speechft_upstream.merge.run import PROVENANCE_KEY

    steps = permute.plan(b.weights, spec, layout)
    writer = StreamWriter(output)
    try:
        refs = {}
        for name, tensor in b.weights.items():
            refs[name] = writer.add(permute.gather(tensor, steps[name]) if name in steps else tensor)
            b.release(tensor)
        top = dict(b.top)
        top["model_weight" if b.family in ("hubert", "wav2vec2") else "model"] = refs
        if isinstance(b.top.get(PROVENANCE_KEY), dict):
            record["model_provenance"] = b.top[PROVENANCE_KEY]
        top[PROVENANCE_KEY] = record
        writer.finish(top)
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def align(reference, model, audio, output, points=DEFAULT_POINTS, max_seconds=None, force=False, say=None):
    """The `speechft align` command; returns (output path, summary)."""
    from pathlib import Path

    from speechft_upstream import __version__
    from speechft_upstream.checkpoints.stream import Source

    output = Path(output)
    if output.exists() and not force:
        raise SpeechFTError(f"{output}: already exists (use --force to replace it)")
    if output.resolve() in (Path(reference).resolve(), Path(model).resolve()):
        raise SpeechFTError(f"{output}: is also an input; write the aligned model to another file")
    if max_seconds is not None and not max_seconds > 0:
        raise SpeechFTError(f"--max-seconds: {max_seconds:g} is not a positive number of seconds")
    a, b = Source(reference, allow_runner=False), Source(model, allow_runner=False)
    check_pair(a, b)
    check_points(b.family, points, b.path)
    spec, summary, layout = compute_spec(a, b, audio, points, max_seconds, say)
    record = {"tool": "speechft", "version": __version__, "method": "align", "family": b.family,
              "reference": {"path": str(a.path.resolve()), "sha256": a.sha256.result()},
              "model": {"path": str(b.path.resolve()), "sha256": b.sha256.result()},
              "audio": str(Path(audio).resolve()), "max_seconds": max_seconds, "points": list(points),
              "alignment": summary, "permutations": _plain(spec)}
    return write_aligned(b, spec, layout, output, record), summary


def _plain(spec):
    return {k: ({kk: vv.tolist() for kk, vv in v.items()} if isinstance(v, dict) else v.tolist())
            for k, v in spec.items()}


def describe_summary(summary):
    lines = []
    for point, info in summary.items():
        extra = "".join(f", {k.replace('_', ' ')} {info[k]}" for k in ("heads_moved", "groups_moved") if k in info)
        lines.append(f"  {point}: {info['moved']}/{info['units']} units moved{extra}; "
                     f"mean correlation {info['corr_before']:.3f} -> {info['corr_after']:.3f}")
    return lines


def align_inputs(spec, base, finetuned, progress):
    """--align-audio: permute each θ′ (in memory) to match θ0; the summaries go to provenance."""
    say = (lambda m: print(m, flush=True)) if progress else None
    summaries = []
    for ft in finetuned:
        check_points(base.family, spec.align_points, ft.path)
        perms, summary, layout = compute_spec(base, ft, spec.align_audio, spec.align_points,
                                              spec.align_max_seconds, say)
        ft.weights = permute.apply(ft.weights, perms, layout)
        summaries.append(summary)
    return {"alignment": summaries, "align_audio": spec.align_audio, "align_points": list(spec.align_points)}
