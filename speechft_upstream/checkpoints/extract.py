"""`speechft extract`: the fine-tuned encoder θ′ out of an s3prl runner checkpoint.

s3prl's runner run with ``-f`` saves the upstream expert's ``state_dict()`` under the
``'Upstream'`` key of ``states-*.ckpt`` / ``dev-best.ckpt``, keys ``model.<param>``. This writes
those weights in θ0's converted format (θ0's configs and non-weight entries, θ0's dtypes), so
the result loads with ``-u speechft_<family> -k`` and with stock ``<family>_local -k``. Nothing
is downloaded: θ0 is the template.
"""

from pathlib import Path

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError

PREFIX = "model."


def encoder_of(states, path):
    """The encoder weights in a loaded runner checkpoint, keys as in the converted format."""
    if not isinstance(states, dict) or not {"Downstream", "Step"} <= set(states):
        raise SpeechFTError(
            f"{path}: not an s3prl runner checkpoint (expected states-*.ckpt or dev-best.ckpt "
            "with 'Upstream', 'Downstream' and 'Step' entries)"
        )
    if "Upstream" not in states:
        raise SpeechFTError(
            f"{path}: holds no 'Upstream' weights: that run kept the encoder frozen "
            "(trained without -f), so there is no fine-tuned encoder to extract"
        )
    upstream = states["Upstream"]
    tuned = {k[len(PREFIX):]: v for k, v in upstream.items() if k.startswith(PREFIX)}
    if not tuned:
        raise SpeechFTError(f"{path}: its 'Upstream' weights have no '{PREFIX}' keys; not a speechft/s3prl expert")
    return tuned


def runner_encoder(path):
    """The encoder weights of a runner checkpoint file, and the step it was saved at."""
    states = files.load(path, allowed=files.RUNNER_ALLOWED)
    return encoder_of(states, path), states.get("Step")


def _first(names):
    return sorted(names)[0]


def build(runner_ckpt, base):
    """θ0's converted checkpoint with the runner's fine-tuned weights in it (a new dict)."""
    import torch

    tuned, step = runner_encoder(runner_ckpt)
    state, family = files.read_encoder(base)
    params = files.weights(state, family)
    missing = params.keys() - tuned.keys()
    if missing:
        raise SpeechFTError(
            f"{runner_ckpt}: does not match {base}: parameter {_first(missing)!r} of the base "
            "is not in the runner checkpoint (was it trained from a different encoder?)"
        )
    extra = tuned.keys() - params.keys()
    if extra:
        raise SpeechFTError(
            f"{runner_ckpt}: does not match {base}: parameter {_first(extra)!r} of the runner "
            "checkpoint is not in the base (was it trained from a different encoder?)"
        )
    weights = {}
    for name, value in params.items():
        new = tuned[name]
        if not isinstance(new, torch.Tensor):
            raise SpeechFTError(f"{runner_ckpt}: weight {name!r} is a {type(new).__name__}, not a tensor")
        if tuple(new.shape) != tuple(value.shape):
            raise SpeechFTError(
                f"{runner_ckpt}: does not match {base}: parameter {name!r} has shape "
                f"{tuple(new.shape)} in the runner checkpoint but {tuple(value.shape)} in the base"
            )
        if new.is_floating_point() and not torch.isfinite(new).all():
            raise SpeechFTError(f"{runner_ckpt}: weight {name!r} holds NaN or Inf values")
        weights[name] = new.to(dtype=value.dtype).contiguous()
    out = dict(state)
    out["model_weight" if family in ("hubert", "wav2vec2") else "model"] = weights
    return out, family, step


def extract(runner_ckpt, base, output, force=False):
    output = Path(output)
    if output.is_dir():
        raise SpeechFTError(f"{output}: is a directory, expected an output file name")
    if output.exists() and not force:
        raise SpeechFTError(f"{output}: already exists (use --force to replace it)")
    state, family, step = build(runner_ckpt, base)
    files.save_atomic(state, output)
    n = sum(t.numel() for t in files.weights(state, family).values())
    at = f" at step {step}" if step is not None else ""
    return f"wrote {family} encoder ({n:,} parameters){at} from {runner_ckpt} to {output}"


def add_parser(sub):
    """The `speechft extract` subcommand (called from cli.build_parser)."""
    p = sub.add_parser("extract", help="θ′ from an s3prl runner checkpoint (-f run) in θ0's converted format",
                       description="Take the fine-tuned encoder out of an s3prl runner checkpoint "
                                   "(dev-best.ckpt, states-*.ckpt of a run with -f) and write it in the "
                                   "converted format of THETA0, loadable by -u speechft_<family> -k and "
                                   "stock <family>_local -k.")
    p.add_argument("runner_ckpt", metavar="RUNNER_CKPT")
    p.add_argument("--base", required=True, metavar="THETA0", help="the checkpoint the run started from")
    p.add_argument("-o", "--output", required=True, metavar="THETA_PRIME.pt")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=lambda args: print(extract(args.runner_ckpt, args.base, args.output, force=args.force)))
    return p
