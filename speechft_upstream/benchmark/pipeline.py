"""The mini-SUPERB pipeline behind `speechft benchmark` (./run.sh).

1. corpus      `speechft corpus` (eSpeak NG, offline) in each task's s3prl layout
2. θ0          the shipped assets/theta0_mini_superb.pt (sha256 checked; the same at every size
               but the tests' smoke size, which uses a random `speechft make-tiny` θ0), or with
               --pretrain its recipe, `speechft pretrain --recipe mini-superb`, on this corpus
3. θ′          one stage per experiment of the plan (plan.py): stable fine-tuning on PR
               (`downstream_recipes/pr.sh finetune`) and the L2 baseline by default; with --paper
               also on SID and ER, the LoRA and early-checkpoint baselines and unsupervised
               continued pre-training on a second language (experiments.py)
4. merges      `speechft merge` θ̂_α = (1−α)·θ0 + α·θ′ for α in ALPHAS, one pass per merged
               experiment (--paper's multi-task merge: θ0 + α·mean(τ_PR, τ_SID, τ_ER))
5. evaluate    the SUPERB protocol (`<task>.sh evaluate`: frozen encoder, weighted sum of layers,
               the task's head trained, dev-best checkpoint tested) for FBANK (`-u fbank`), θ0,
               every θ̂_α and θ′ (= α 1.0) on PR, SID, KS, IC, ER (prosody) by default;
               --tasks adds any of ASR, QbE (DTW on every layer: no head, one run), ASV, SD, SF
               (--tasks all: the ten)
6. select α    per merged experiment, the α whose *dev* SUPERB-style score (1000 × mean over tasks of
               (dev − FBANK dev)/(perfect − FBANK dev), each task's main metric; ASV, which has
               no dev split, left out) is highest; its *test* rows are θ̂
7. analyze     `speechft analyze --base θ0 --models θ′ θ̂` on held-out test audio
8. report      results.{md,csv,json}, scores.json, plots (report.py)

With --data-root DIR the SUPERB data in DIR replaces stage 1 (inputs.py), --theta0 PATH replaces
the shipped θ0 (converted first when it is a fairseq checkpoint), --finetune-task picks θ′'s task
(ASR_TED, the paper's, by default with --data-root) and the size `superb` holds SUPERB's
budgets (s3prl's downstream configs). --gpus N / --slurm change only where the commands run (executor.py).

Every stage keeps a ``stage.json`` (its parameters' key, outputs, time) in its folder under
--work; a second run reuses a stage when the key matches and the outputs are there, and redoes
it (and what depends on it) otherwise.
"""

import concurrent.futures
import os
import threading
import time
from pathlib import Path

from speechft_upstream.benchmark import executor, experiments, inputs
from speechft_upstream.benchmark import plan as plans
from speechft_upstream.benchmark.sizes import (ALPHAS, BASELINE, DEFAULT_TASKS, FINETUNE_TASKS, NO_DEV, NO_HEAD, SIZES,
                                               TASKS)
from speechft_upstream.benchmark.stage import header, say, stage_key
from speechft_upstream.benchmark.stage_evaluations import Handoff, stage_evaluate
from speechft_upstream.benchmark.stages import stage_analyze, stage_corpus, stage_theta0
from speechft_upstream.errors import SpeechFTError


def select_alpha(evals, alphas, entry=None, tasks=None):
    """The α with the highest dev score of ``entry`` (default: the default experiment); returns
    (alpha, {alpha: dev score}, per-encoder detail). See experiments.select_alpha."""
    entry = entry or plans.default_plan()[0]
    tasks = tasks or sorted({task for _, task in evals})
    return experiments.select_alpha(evals, alphas, entry, tasks)


selection_references = experiments.selection_references


def run(out="results", work="exp/mini_superb", size="full", seed=0, jobs=None, device=None, tasks=None,
        pretrain=False, data_root=None, theta0=None, finetune_task=None, gpus=None, slurm=None, paper=False,
        plan=None, skip_missing=None):
    """``slurm``: None, or the options of executor.Slurm (partition, time_min, gpus_per_job, ...).
    ``paper``: the paper's experiments (plan.paper_plan) instead of the default run's; ``plan``: a
    list of plan.Experiment (the tests'), its first entry the default experiment. ``skip_missing``:
    drop entries whose producer module this checkout lacks (default: the size's setting, the
    smoke size's only; every size a user can pick refuses)."""
    work = Path(work).resolve()
    # the mini benchmark's default keeps ./run.sh within an hour; the paper's table has all ten
    tasks = list(tasks or SIZES[size].get("tasks") or (TASKS if data_root else DEFAULT_TASKS))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or "PR" not in tasks:
        raise SpeechFTError(f"tasks must include PR and come from {', '.join(TASKS)} (or be 'all'); got "
                            f"{', '.join(tasks)}")
    if len(set(tasks)) != len(tasks):
        raise SpeechFTError(f"--tasks names a task twice: {', '.join(tasks)}")
    finetune_task = finetune_task or ("ASR_TED" if data_root else "PR")
    if finetune_task not in FINETUNE_TASKS:
        raise SpeechFTError(f"--finetune-task must be one of {', '.join(FINETUNE_TASKS)}, got {finetune_task}")
    if SIZES[size]["corpus"] is None and not data_root:
        raise SpeechFTError(f"--size {size}: needs --data-root (its budgets are for the SUPERB data sets)")
    if plan is None:
        plan = (plans.paper_plan(finetune_task) if paper else
                plans.default_plan(finetune_task, SIZES[size].get("default_baseline", True)))
    if not plan or not plan[0].primary or plan[0].task != finetune_task:
        raise SpeechFTError(f"a plan starts with the default experiment (fine-tuning on {finetune_task})")
    skip = SIZES[size].get("skip_missing_producers", False) if skip_missing is None else skip_missing
    plan, skipped = plans.resolve(plan, skip_missing=skip)
    # every input is checked before anything runs
    if data_root:
        for task in dict.fromkeys([finetune_task] + [e.task for e in plan if e.kind == "finetune"]):
            inputs.check_data_root(data_root, tasks, task)
    theta0_kind = inputs.theta0_format(Path(theta0).resolve()) if theta0 else None
    if gpus is not None and slurm is not None:
        raise SpeechFTError("--gpus and --slurm exclude each other (--slurm-gpus sets the GPUs per job)")
    where = None
    if gpus is not None:
        if gpus < 1:
            raise SpeechFTError(f"--gpus must be at least 1, got {gpus}")
        where = executor.GpuPool(executor.visible_gpus(gpus))
        jobs, device = jobs or gpus, device or "cuda"
    elif slurm is not None:
        where = executor.Slurm(work / "slurm", **slurm)
        # all evaluations submitted at once; the login node only waits
        jobs, device = jobs or 10_000, device or ("cuda" if slurm.get("gpus_per_job") else "cpu")
    data_info = inputs.data_root_info(data_root, tasks, finetune_task) if data_root else None
    with executor.use(where):
        return _run(out, work, size, seed, jobs, device, tasks, pretrain, data_info, theta0, theta0_kind,
                    finetune_task, where, plan, skipped)


def _run(out, work, size, seed, jobs, device, tasks, pretrain, data_info, theta0_path, theta0_kind, finetune_task,
         where, plan, skipped=()):
    from speechft_upstream.benchmark import report

    started = time.time()
    out = Path(out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    producing = [e for e in plan if e.kind != "multi"]
    total = 7 + len(producing)
    alphas = tuple(SIZES[size]["alphas"])
    times = {}
    runs_on = where.kind if where else "here"
    say(f"speechft benchmark: {'SUPERB data' if data_info else 'mini-SUPERB'}, size {size}, work {work}, results "
        f"{out}, {jobs} job(s), device {device}, commands run: {runs_on}")
    evaluations, runs = plans.evaluation_count(plan, tasks, alphas, SIZES[size]["seeds"], NO_HEAD)
    say(f"experiments: {', '.join(e.prime for e in plan)}; {evaluations} evaluations (encoder × task), "
        f"{runs} evaluation runs counting seeds (finished ones under --work are reused)")
    for name in skipped:
        say(f"plan entry {name} skipped: its producer module is not in this checkout (size {size} only)")

    if data_info:
        header(1, total, f"data: --data-root {data_info['dir']} (checked; in place of the corpus stage)")
        corpus_info = data_info
        times["data"] = {"_seconds": time.time() - started, "_reused": False}
    else:
        header(1, total, "corpus: eSpeak NG speech in the SUPERB layouts (speechft corpus)")
        corpus_info = stage_corpus(work, size, seed)
        times["corpus"] = corpus_info
        say(f"corpus: {corpus_info['speakers']} speakers, {corpus_info['minutes']} min of audio, "
            + ", ".join(f"{t} {n}" for t, n in corpus_info["utterances"].items()))

    # Pre-training and fine-tuning run on one core: with two or more jobs, the FBANK and θ0
    # evaluations (which need only the corpus and θ0) run meanwhile on the other one.
    fbank = {"name": BASELINE, "key": "s3prl fbank"}
    # With --slurm every evaluation is submitted in the evaluation stage, all at once.
    background = concurrent.futures.ThreadPoolExecutor(max_workers=1) if jobs >= 2 and runs_on != "slurm" else None
    slots = threading.Semaphore(jobs)
    handoff = Handoff()
    early = []
    if background:
        say("FBANK evaluations start in the background (one at a time)")
        early.append(background.submit(stage_evaluate, work, size, corpus_info, [fbank], device, 1, tasks, True, slots,
                                       handoff))

    try:
        if theta0_path:
            header(2, total, f"θ0: --theta0 {theta0_path}")
            theta0 = inputs.stage_theta0_given(work, theta0_path, theta0_kind)
        else:
            header(2, total, "θ0: small HuBERT, " + ("pre-trained on this corpus (speechft pretrain)" if pretrain
                                                      else "the shipped mini-SUPERB θ0"))
            theta0 = stage_theta0(work, size, seed, corpus_info, pretrain)
        times["theta0"] = theta0
        theta0_encoder = {"name": "theta0", "path": theta0["path"], "key": stage_key(theta0)}
        if background:
            say("θ0 evaluations queued in the background")
            early.append(background.submit(stage_evaluate, work, size, corpus_info, [theta0_encoder], device, 1, tasks,
                                           True, slots, handoff))

        primes = experiments.run_producers(plan, work, size, seed, corpus_info, theta0, device, 3, total, times)
        step = 3 + len(producing)
        header(step, total, "θ̂_α = θ0 + α·τ for α = " + ", ".join(f"{a:g}" for a in ALPHAS) + " (speechft merge) for "
               + ", ".join(e.prime for e in plan if e.merged))
        merges = experiments.run_merges(plan, work, theta0, primes, times)

        header(step + 1, total, "SUPERB protocol: frozen encoder, weighted sum, task heads (<task>.sh evaluate)")
        t5 = time.time()
        rest = [enc for e in plan for enc in experiments.encoders_of(e, alphas, primes.get(e.name),
                                                                     merges.get(e.name))]
        if background:
            failures = []
            if not all(f.done() for f in early):  # the background starts no new run; its queue joins this one
                running = handoff.stop()
                say("the FBANK / θ0 evaluations not yet started join stage 5's runs")
                stage_evaluate(work, size, corpus_info, [fbank, theta0_encoder, *rest], device, jobs, tasks,
                               slots=slots, skip=running)
            for future in early:
                failures += future.result()[1]
            background.shutdown()
            if failures:
                raise SpeechFTError("evaluation run(s) failed:\n" + "\n".join(failures))
    except BaseException:
        if background:  # no new runs; the one running finishes
            background.shutdown(wait=False, cancel_futures=True)
        raise
    encoders = [fbank, theta0_encoder, *rest]
    say(f"encoders: {', '.join(e['name'] for e in encoders)}; tasks: {', '.join(tasks)}")
    evals = stage_evaluate(work, size, corpus_info, encoders, device, jobs, tasks, slots=slots)
    extra = experiments.extra_tasks(plan, primes, alphas)
    for task, folder, names in extra:  # a task some encoders only are evaluated on
        say(f"{task} (data {folder}): {', '.join(names)}")
        evals.update(stage_evaluate(work, size, corpus_info, [e for e in encoders if e["name"] in names], device,
                                    jobs, [task], slots=slots, data_dirs={task: folder}))
    times["evaluate"] = {"_seconds": time.time() - t5, "_reused": False}

    header(step + 2, total, f"α chosen on the dev splits (dev SUPERB-style score over "
                            f"{', '.join(t for t in tasks if t not in NO_DEV)}), per merged experiment")
    chosen = experiments.choose(plan, evals, alphas, tasks, merges, primes)
    main = plan[0]
    by_alpha, dev_scores = chosen[main.name]["by_alpha"], chosen[main.name]["dev_scores"]
    alpha = chosen[main.name]["alpha"]
    for a, s in by_alpha.items():
        say(f"  α = {a:<5g} dev score {s:8.2f}" + ("   <- chosen" if a == alpha else ""))
    theta_hat = {k: chosen[main.name][k] for k in ("alpha", "encoder", "path")}

    header(step + 3, total, "analyze: per-layer similarity to θ0 and weight change (speechft analyze)")
    analysis = stage_analyze(work, size, corpus_info, theta0, primes[main.name], theta_hat, merges[main.name]["paths"])
    times["analyze"] = analysis
    more = experiments.stage_analyze_baselines(work, size, corpus_info, theta0, plan, primes)
    if more:
        times["analyze_baselines"] = more

    header(step + 4, total, f"report -> {out}")
    context = {"tasks": tasks, "alphas": alphas, "size": size, "seed": seed, "corpus": corpus_info, "theta0": theta0,
               "theta_prime": primes[main.name], "theta_hat": theta_hat, "by_alpha": by_alpha,
               "dev_scores": dev_scores, "evals": evals, "analysis": analysis, "analysis_baselines": more,
               "sizes": SIZES[size], "jobs": jobs, "device": device, "finetune_task": finetune_task,
               "runs_on": runs_on, "plan": plan, "chosen": chosen, "extra_tasks": [t for t, _, _ in extra],
               "paper_plan": any(e.kind in ("multi", "unsupervised") for e in plan), "skipped": list(skipped),
               "times": {k: (round(v.get("_seconds", 0.0), 1), v.get("_reused", False)) for k, v in times.items()},
               "wall_seconds": time.time() - started, "work": str(work)}
    written = report.write(out, context)
    for line in report.summary_lines(out):
        print(line)
    say(f"done in {time.time() - started:.0f} s: " + ", ".join(str(Path(p).relative_to(out)) for p in written))
    return out


def add_parser(sub):
    from speechft_upstream.benchmark import command

    command.add_parser(sub)
