"""`speechft benchmark`'s options (the pipeline itself is pipeline.run)."""

import argparse
from pathlib import Path

from speechft_upstream.benchmark.sizes import DEFAULT_TASKS, FINETUNE_TASKS, TASKS, parse_tasks
from speechft_upstream.errors import SpeechFTError

PUBLIC_SIZES = ("full", "quick", "superb")  # smoke is the tests' (--smoke, hidden)
# the size once named paper: SUPERB's budgets, not the paper's experiments


def add_parser(sub):
    p = sub.add_parser("benchmark", help="the Speech-FT benchmark: offline mini-SUPERB (./run.sh's main job), or "
                                         "the paper's table on real SUPERB data (--data-root)",
                       description="corpus (or --data-root) → θ0 → stable fine-tuning (PR; ASR_TED with "
                                   "--data-root) and the L2 baseline → merges → SUPERB protocol for FBANK, θ0, θ′, "
                                   "θ̂, the baseline → α chosen on dev → analyze → report. --paper: the paper's "
                                   "experiments. Finished stages under --work are reused.")
    p.add_argument("--paper", action="store_true",
                   help="the paper's experiments: θ′ from stable fine-tuning on PR, SID and ER, each merged with "
                        "its own α chosen on dev; the multi-task merge θ0 + α·mean(τ_PR, τ_SID, τ_ER); the "
                        "baselines L2 toward θ0, LoRA and an early checkpoint (same task and budget); "
                        "unsupervised continued pre-training on a second language, merged back (also evaluated "
                        "on PR in that language); the report's table in the paper's layout with the claims. "
                        "Any size (with --quick: the quick budgets); prints the number of evaluation runs first")
    p.add_argument("--quick", action="store_true", help="smaller corpus, fewer steps (about 7 minutes on 2 cores); "
                                                        "the same as --size quick")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: tiny everything
    p.add_argument("--size", metavar="SIZE",
                   help="budgets: full (default), quick, or superb (SUPERB's: s3prl's downstream configs, 3 seeds, "
                        "ER's five folds, 50k-step ASR_TED fine-tuning; the default with --data-root)")
    p.add_argument("--data-root", metavar="DIR", help="real task data instead of the eSpeak NG corpus: DIR/<task>/ "
                   "in the layout of that task's recipe (pr asr ks qbe sid asv sd er ic sf, asr_ted for "
                   "TED-LIUM 3; downstream_recipes/README.md); checked before anything runs")
    p.add_argument("--theta0", metavar="PATH", help="θ0 checkpoint: speechft's (s3prl's) converted HuBERT format, "
                   "or a fairseq HuBERT checkpoint (e.g. hubert_base_ls960.pt; converted first with speechft "
                   "convert, cached by its sha256)")
    p.add_argument("--finetune-task", type=str.upper, metavar="TASK",
                   help=f"θ′'s fine-tuning task: {' or '.join(FINETUNE_TASKS)} (default PR; ASR_TED with --data-root, "
                        "data DIR/asr_ted)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: results; other sizes: results/<size>, so "
                                                "they never overwrite the full run's report)")
    p.add_argument("--work", default="exp/mini_superb", metavar="DIR",
                   help="stage outputs, reused by the next run (default: exp/mini_superb; other sizes use its "
                        "subfolder <size>/)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed, and θ0's with --pretrain (default 0)")
    p.add_argument("--jobs", type=int, metavar="N", help="evaluation runs at a time (default: min(2, CPUs); "
                                                        "--gpus N: N; --slurm: all)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available (--gpus: cuda; --slurm: "
                                                             "cuda unless --slurm-gpus 0)")
    p.add_argument("--pretrain", action="store_true", help="pre-train θ0 on this run's corpus (speechft pretrain "
                   "--recipe mini-superb: about an hour on one core) instead of using the shipped "
                   "assets/theta0_mini_superb.pt")
    p.add_argument("--tasks", metavar="T,T,...",
                   help="evaluation tasks, PR included, from " + ",".join(TASKS) + ", or 'all' for the ten "
                        "(default: " + ",".join(DEFAULT_TASKS) + "; with --data-root: all ten; each added task "
                        "lengthens the run: QbE runs DTW on every layer, ASV has no dev split and does not enter "
                        "the choice of α)")
    g = p.add_argument_group("where the commands run")
    g.add_argument("--gpus", type=int, metavar="N", help="N runs at a time on this machine, each on its own GPU "
                   "(CUDA_VISIBLE_DEVICES); refused when fewer than N CUDA devices are visible")
    g.add_argument("--slurm", action="store_true", help="every stage's commands as Slurm jobs (submitit); this "
                   "process submits, waits and keeps the stage cache; job folders in WORK/slurm/")
    g.add_argument("--slurm-partition", metavar="NAME", help="the jobs' partition (default: the cluster's)")
    g.add_argument("--slurm-time", type=int, default=1440, metavar="MIN", help="time limit per job, minutes "
                                                                              "(default 1440)")
    g.add_argument("--slurm-gpus", type=int, default=1, metavar="N", help="GPUs per job (default 1)")
    g.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (default: the cluster's)")
    g.add_argument("--slurm-extra", action="append", metavar="KEY=VALUE",
                   help="more sbatch parameters, e.g. --slurm-extra account=abc --slurm-extra qos=high (repeatable)")
    p.set_defaults(func=_cli)


def _size(args):
    if args.size == "paper":
        raise SpeechFTError("--size paper is now --size superb (SUPERB's budgets)")
    if args.size is not None and args.size not in PUBLIC_SIZES + ("smoke",):
        raise SpeechFTError(f"--size must be one of {', '.join(PUBLIC_SIZES)}, got '{args.size}'")
    picked = [s for s, on in (("smoke", args.smoke), ("quick", args.quick)) if on]
    if len(picked) > 1:
        raise SpeechFTError("--quick and --smoke exclude each other")
    if picked and args.size and args.size != picked[0]:
        raise SpeechFTError(f"--{picked[0]} and --size {args.size} exclude each other")
    return args.size or (picked[0] if picked else "superb" if args.data_root else "full")


def _cli(args):
    from speechft_upstream.benchmark import executor, pipeline

    size = _size(args)
    if args.jobs is not None and args.jobs < 1:
        raise SpeechFTError(f"--jobs must be at least 1, got {args.jobs}")
    slurm = None
    if args.slurm:
        if args.slurm_time < 1 or args.slurm_gpus < 0:
            raise SpeechFTError("--slurm-time must be at least 1 minute and --slurm-gpus at least 0")
        slurm = {"partition": args.slurm_partition, "time_min": args.slurm_time, "gpus_per_job": args.slurm_gpus,
                 "cpus_per_job": args.slurm_cpus, "extra": executor.parse_extra(args.slurm_extra)}
    out = args.out or ("results" if size == "full" else f"results/{size}")
    pipeline.run(out=out, work=Path(args.work) / size if size != "full" else args.work, size=size, seed=args.seed,
                 jobs=args.jobs, device=args.device,
                 tasks=parse_tasks(args.tasks) if args.tasks else None,
                 pretrain=args.pretrain, data_root=args.data_root, theta0=args.theta0,
                 finetune_task=args.finetune_task, gpus=args.gpus, slurm=slurm, paper=args.paper)
