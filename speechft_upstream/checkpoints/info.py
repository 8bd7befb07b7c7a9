"""`speechft info FILE`: what a checkpoint is, and where a merged one came from.

The file is memory-mapped, so only its metadata is read: cheap even for large checkpoints.
"""

from collections import Counter

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.merge.run import PROVENANCE_KEY


def _summary(weights):
    n = sum(t.numel() for t in weights.values())
    nbytes = sum(t.numel() * t.element_size() for t in weights.values())
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in weights.values())
    return n, nbytes, ", ".join(f"{d} x{c}" for d, c in dtypes.most_common())


def _layers(weights):
    from speechft_upstream.merge.methods import layer_index

    indices = {layer_index(name) for name in weights} - {None}
    return max(indices) + 1 if indices else 0


def describe(path):
    """The lines `speechft info` prints for ``path``."""
    state = files.load(path, files.RUNNER_ALLOWED)
    if isinstance(state, dict) and {"Upstream", "Args"} <= set(state):
        return _describe_runner(path, state)
    family = files.detect_family(state, path)
    weights = files.weights(state, family)
    if not isinstance(weights, dict):
        raise SpeechFTError(f"{path}: holds no weights under its {family} weight key")
    n, nbytes, dtypes = _summary(weights)
    lines = [f"{path}: {family} checkpoint (s3prl converted format)",
             f"  parameters: {n:,} in {len(weights)} tensors ({nbytes / 2**20:.1f} MiB; {dtypes})",
             f"  transformer layers: {_layers(weights)}"]
    lines += _describe_provenance(state.get(PROVENANCE_KEY))
    return lines


def _describe_runner(path, state):
    upstream = state.get("Upstream") or {}
    encoder = {k: v for k, v in upstream.items() if k.startswith("model.")}
    args = state.get("Args")
    lines = [f"{path}: s3prl runner checkpoint (step {state.get('Step', '?')})",
             f"  upstream: {getattr(args, 'upstream', '?')}  downstream: {getattr(args, 'downstream', '?')}"]
    if encoder:
        n, nbytes, dtypes = _summary(encoder)
        lines.append(f"  fine-tuned encoder: {n:,} parameters in {len(encoder)} tensors ({dtypes}); "
                     "usable as θ′ in speechft merge")
    else:
        lines.append("  no fine-tuned encoder (upstream was frozen)")
    return lines


def _describe_provenance(record):
    if not isinstance(record, dict):
        return ["  provenance: none (not written by speechft merge)"]
    if record.get("method") == "align":
        return _describe_alignment(record)
    alpha = record.get("alpha")
    lines = [f"  merged by: {record.get('tool', '?')} {record.get('version', '?')}",
             f"  method: {record.get('method')}  α: {alpha}"]
    if record.get("layer_alpha"):
        lines.append("  per-layer α: " + ", ".join(f"{a:g}" for a in record["layer_alpha"]))
    extras = [f"{k}: {record[k]}" for k in ("weights", "density", "seed", "gamma", "epsilon", "offdiag_scale")
              if record.get(k) is not None]
    if isinstance(record.get("audio"), dict):
        extras.append(f"audio: {record['audio'].get('path')}")
    if extras:
        lines.append("  " + "  ".join(extras))
    base = record.get("base") or {}
    lines.append(f"  θ0: {base.get('path')}  sha256 {base.get('sha256')}")
    for i, ft in enumerate(record.get("finetuned") or []):
        lines.append(f"  θ′[{i}]: {ft.get('path')}  sha256 {ft.get('sha256')}  ({ft.get('kind')})")
    kept = record.get("kept_from_base") or []
    lines.append(f"  tensors: {record.get('merged')} merged, {record.get('copied_unchanged')} with τ = 0 "
                 f"(θ0 copied), {len(kept)} kept from θ0" + (f" ({', '.join(kept)})" if kept else ""))
    for i, summary in enumerate(record.get("alignment") or []):
        lines.append(f"  θ′[{i}] aligned to θ0 before merging (audio {record.get('align_audio')}):")
        lines += _alignment_lines(summary)
    if record.get("repair"):
        lines.append(f"  REPAIR: {record['repair'].get('points')} points reset (audio {record['repair'].get('audio')})")
    if record.get("config"):
        lines.append(f"  config: {record['config']}")
    if isinstance(record.get("base_provenance"), dict):
        lines.append("  θ0 was itself merged:")
        lines += ["  " + line for line in _describe_provenance(record["base_provenance"])]
    return lines


def _alignment_lines(summary):
    from speechft_upstream.merge.align import describe_summary

    return ["  " + line for line in describe_summary(summary)]


def _describe_alignment(record):
    lines = [f"  aligned by: {record.get('tool', '?')} {record.get('version', '?')} (speechft align, "
             f"points {','.join(record.get('points') or [])})",
             f"  reference: {(record.get('reference') or {}).get('path')}  sha256 {(record.get('reference') or {}).get('sha256')}",
             f"  model: {(record.get('model') or {}).get('path')}  sha256 {(record.get('model') or {}).get('sha256')}",
             f"  audio: {record.get('audio')}" + (f" (first {record['max_seconds']:g} s)" if record.get("max_seconds") else "")]
    lines += _alignment_lines(record.get("alignment") or {})
    if isinstance(record.get("model_provenance"), dict):
        lines.append("  the model was itself merged:")
        lines += ["  " + line for line in _describe_provenance(record["model_provenance"])]
    return lines
