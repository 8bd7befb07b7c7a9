"""`speechft <command>`: argument parsing only; each command is one call into the library."""

import argparse
import sys

from speechft_upstream import __version__
from speechft_upstream.errors import SpeechFTError


def _make_tiny(args):
    import warnings

    from speechft_upstream.checkpoints import tiny

    with warnings.catch_warnings():  # s3prl's models still call the deprecated weight_norm: not ours to act on
        warnings.filterwarnings("ignore", message=r".*weight_norm.*", category=FutureWarning)
        path = tiny.write_tiny_format(args.arch, args.output, seed=args.seed, fmt=args.format)
    layout = {"s3prl": "s3prl's converted", "fairseq": "the original (fairseq / WavLM)"}[args.format]
    print(f"wrote tiny {args.arch} (seed {args.seed}) in {layout} layout to {path}")


def _convert(args):
    from speechft_upstream.checkpoints import convert

    family, path = convert.convert(args.ckpt, args.output, force=args.force)
    print(f"converted {args.ckpt} ({family}) to s3prl's format: {path} "
          f"(-u speechft_{family} -k {path}, or stock {family}_local)")


def _register(args):
    from speechft_upstream.upstream import registry

    if args.list:
        entries = registry.read()
        if not entries:
            print(f"no registered upstreams ({registry.registry_path()})")
        for name, info in sorted(entries.items()):
            print(f"{name}\t{info['family']}\t{info['path']}")
        return
    if args.remove:
        registry.remove(args.remove)
        print(f"removed {args.remove!r} from {registry.registry_path()}")
        return
    if not args.name or not args.ckpt:
        raise SpeechFTError("register needs NAME and CKPT (or --list / --remove NAME)")
    info = registry.add(args.name, args.ckpt, force=args.force)
    print(f"registered {args.name!r}: {info['family']} checkpoint {info['path']} "
          f"(use -u {args.name} in s3prl's runner)")


def _check(args):
    from speechft_upstream.checkpoints import files

    state, family = files.read_encoder(args.ckpt)
    n = sum(t.numel() for t in files.weights(state, family).values())
    print(f"{args.ckpt}: {family} checkpoint, {n:,} parameters, all finite")


def _merge(args):
    from speechft_upstream.merge import run

    options = {"base": args.base, "finetuned": args.finetuned, "alpha": args.alpha, "output": args.output,
               "method": args.method, "weights": args.weights, "density": args.density, "seed": args.seed,
               "layer_alpha": args.layer_alpha, "extrapolate": args.extrapolate, "force": args.force,
               "register": args.register, "gamma": args.gamma, "epsilon": args.epsilon, "audio": args.audio,
               "offdiag_scale": args.offdiag_scale, "max_seconds": args.max_seconds,
               "align_audio": args.align_audio, "align_points": args.align_points,
               "repair_audio": args.repair_audio, "align_max_seconds": args.align_max_seconds}
    print(run.describe(*run.run(options, args.config)))


def _align(args):
    import sys

    from speechft_upstream.merge import align

    points = align.parse_points(args.points)
    path, summary = align.align(args.reference, args.model, args.audio, args.output, points, args.max_seconds,
                                args.force, say=lambda m: print(m, file=sys.stderr))
    print("\n".join([f"wrote {path} ({args.model} aligned to {args.reference})"] + align.describe_summary(summary)))


def _info(args):
    from speechft_upstream.checkpoints import info

    print("\n".join(info.describe(args.ckpt)))


def _export_hf(args):
    from speechft_upstream.checkpoints.hf import export as export_hf

    print(export_hf.export(args.ckpt, args.outdir, force=args.force))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="speechft",
        description="Speech-FT for s3prl: stable fine-tuning, weight-space merging, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"speechft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("make-tiny", help="write a tiny random encoder in s3prl's converted format")
    p.add_argument("--arch", required=True, choices=("hubert", "wav2vec2", "wavlm"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("s3prl", "fairseq"), default="s3prl",
                   help="s3prl's converted format (default), or the original layout: fairseq's "
                        "checkpoint (hubert, wav2vec2) / Microsoft's WavLM file")
    p.add_argument("-o", "--output", required=True, metavar="PATH")
    p.set_defaults(func=_make_tiny)

    p = sub.add_parser("register", help="name a checkpoint as an s3prl upstream (-u NAME)")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("ckpt", nargs="?", metavar="CKPT")
    p.add_argument("--list", action="store_true", help="show registered names")
    p.add_argument("--remove", metavar="NAME", help="forget a registered name")
    p.add_argument("--force", action="store_true", help="replace an existing registration")
    p.set_defaults(func=_register)

    p = sub.add_parser("check", help="verify a converted checkpoint: readable, family, finite weights")
    p.add_argument("ckpt", metavar="CKPT")
    p.set_defaults(func=_check)

    p = sub.add_parser("merge", help="θ̂ = θ0 + α·τ: merge fine-tuned checkpoints into θ0 (streamed)",
                       description="Weight-space merging. Options override --config; the config also "
                                   "takes the Speech-FT authors' keys (merge_method, alpha, base_model_name, "
                                   "base_model_ckpt_path, finetune_model_paths, output_dir).")
    p.add_argument("--base", metavar="THETA0", help="pre-trained checkpoint (s3prl converted format)")
    p.add_argument("--finetuned", nargs="+", metavar="THETA_PRIME",
                   help="fine-tuned checkpoints: converted format or s3prl runner dev-best.ckpt / states-*.ckpt")
    p.add_argument("--alpha", metavar="A[,A...]", help="interpolation weight(s); several give one file each")
    p.add_argument("-o", "--output", metavar="OUT.pt", help="output ({alpha} in the name is replaced)")
    p.add_argument("--method", choices=("linear", "task_arithmetic", "ties", "dare", "slerp", "model_stock",
                                        "breadcrumbs", "della", "tsv", "iso", "regmean"),
                   help="linear (Speech-FT, default), task_arithmetic, ties, dare, slerp (one θ′, t = α), "
                        "model_stock (≥ 2 θ′), breadcrumbs, della, tsv (TSV-M), iso (ISO-C), regmean (--audio)")
    p.add_argument("--weights", metavar="W[,W...]", help="one weight per fine-tuned checkpoint")
    p.add_argument("--density", type=float, help="fraction kept: ties (default 0.2), dare (0.1), "
                                                 "breadcrumbs (0.1), della (mean keep probability, 0.5)")
    p.add_argument("--seed", type=int, help="random seed of dare's and della's masks (default 0)")
    p.add_argument("--gamma", type=float, help="breadcrumbs: fraction of largest |τ| dropped (default 0.01)")
    p.add_argument("--epsilon", type=float, help="della: keep probabilities span density ± ε (default 0.1)")
    p.add_argument("--audio", metavar="DIR", help="regmean: unlabelled audio (wav/flac, any depth) for the Grams")
    p.add_argument("--offdiag-scale", type=float, help="regmean: off-diagonal Gram scaling (default 0.9)")
    p.add_argument("--max-seconds", type=float, help="regmean: use at most this much of the audio")
    p.add_argument("--layer-alpha", metavar="A,A,...|START:END",
                   help="α per transformer layer (list) or linear over depth; --alpha covers the rest")
    p.add_argument("--extrapolate", action="store_true", help="allow α outside [0, 1]")
    p.add_argument("--force", action="store_true", help="replace existing outputs (and registrations)")
    p.add_argument("--register", metavar="NAME", help="also register the output as upstream NAME")
    p.add_argument("--align-audio", metavar="DIR", help="align each θ′ to θ0 on this audio before merging "
                                                        "(permutation alignment, as `speechft align`)")
    p.add_argument("--align-points", metavar="cnn,ffn,attn[,residual]", help="points to align (default cnn,ffn,attn)")
    p.add_argument("--repair-audio", metavar="DIR", help="REPAIR: reset the merged model's unit statistics to "
                                                         "the interpolated endpoints' on this audio (linear only)")
    p.add_argument("--align-max-seconds", type=float, metavar="S", help="use at most S seconds of that audio")
    p.add_argument("--config", metavar="merge.yaml", help="YAML merge config")
    p.set_defaults(func=_merge)

    p = sub.add_parser("align", help="permute a model's hidden units to match a reference model (same function)",
                       description="Permutation alignment (Ritter-Gutierrez et al. 2025): B's units are reordered "
                                   "to best correlate with A's on unlabelled audio; B_ALIGNED computes the same "
                                   "function as B, in B's converted format.")
    p.add_argument("--reference", required=True, metavar="A.pt", help="the model to align to")
    p.add_argument("--model", required=True, metavar="B.pt", help="the model to permute")
    p.add_argument("--audio", required=True, metavar="DIR", help="folder of 16 kHz mono .wav/.flac files")
    p.add_argument("-o", "--output", required=True, metavar="B_ALIGNED.pt")
    p.add_argument("--points", default="cnn,ffn,attn", metavar="cnn,ffn,attn[,residual]",
                   help="merge points to permute (default cnn,ffn,attn; WavLM: cnn,ffn)")
    p.add_argument("--max-seconds", type=float, metavar="S", help="use at most S seconds of the audio")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_align)

    p = sub.add_parser("info", help="family, parameter count and merge provenance of a checkpoint")
    p.add_argument("ckpt", metavar="FILE")
    p.set_defaults(func=_info)

    p = sub.add_parser("export-hf", help="write a HuggingFace transformers model folder (safetensors)")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("outdir", metavar="OUTDIR")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.set_defaults(func=_export_hf)

    from speechft_upstream.checkpoints import extract

    extract.add_parser(sub)
    from speechft_upstream.finetune import unsupervised

    unsupervised.add_parser(sub)
    from speechft_upstream.evaluate import score

    score.add_parser(sub)
    from speechft_upstream.evaluate import analyze

    analyze.add_parser(sub)

    p = sub.add_parser("convert", help="original fairseq HuBERT / wav2vec 2.0 or WavLM checkpoint -> s3prl's format",
                       description="Converts without fairseq, reading the file safely (weights-only "
                                   "unpickling with an explicit allow-list); the output equals s3prl's "
                                   "own converter's (hubert_custom(ckpt, fairseq=True)).")
    p.add_argument("ckpt", metavar="CKPT")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt")
    p.add_argument("--force", action="store_true", help="replace an existing OUT.pt")
    p.set_defaults(func=_convert)
    from speechft_upstream.data import corpus

    corpus.add_parser(sub)
    from speechft_upstream.pretrain import train as pretrain

    pretrain.add_parser(sub)
    from speechft_upstream.benchmark import pipeline as benchmark

    benchmark.add_parser(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SpeechFTError as err:
        print(f"speechft: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
