"""The mini-SUPERB pipeline behind `speechft benchmark` (./run.sh).

1. corpus      `speechft corpus` (eSpeak NG, offline) in each task's s3prl layout
2. θ0          the shipped assets/theta0_mini_superb.pt (sha256 checked; the same at every size
               but the tests' smoke size, which uses a random `speechft make-tiny` θ0), or with
               --pretrain its recipe, `speechft pretrain --recipe mini-superb`, on this corpus
3. θ′          stable fine-tuning on PR: `downstream_recipes/pr.sh finetune`
4. merges      `speechft merge` θ̂_α = (1−α)·θ0 + α·θ′ for α in ALPHAS, one pass
5. evaluate    the SUPERB protocol (`<task>.sh evaluate`: frozen encoder, weighted sum of layers,
               the task's head trained, dev-best checkpoint tested) for FBANK (`-u fbank`), θ0,
               every θ̂_α and θ′ (= α 1.0) on PR, SID, KS, IC, ER (prosody) by default;
               --tasks adds any of ASR, QbE (DTW on every layer: no head, one run), ASV, SD, SF
               (--tasks all: the ten)
6. select α    the α whose *dev* SUPERB-style score (1000 × mean over tasks of
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

from speechft_upstream.benchmark import executor, inputs
from speechft_upstream.benchmark.sizes import (ALPHAS, BASELINE, DEFAULT_TASKS, FINETUNE_TASKS, NO_DEV, SCALE,
                                               SIZES, TASKS)
from speechft_upstream.benchmark.stage import header, say, stage_key
from speechft_upstream.benchmark.stages import (Handoff, stage_analyze, stage_corpus, stage_evaluate, stage_finetune,
                                                stage_merge, stage_theta0)
from speechft_upstream.errors import SpeechFTError


def select_alpha(evals, alphas):
    """The α with the highest dev score; returns (alpha, {alpha: dev score}, per-task detail)."""
    from speechft_upstream.evaluate import score

    refs = selection_references(score.load_references(score.MINI_REFERENCES))
    rows = []
    for (name, task), out in evals.items():
        if out.get("dev") is None:  # ASV: no dev split
            continue
        rows.append({"encoder": name, "task": task, "metric": TASKS[task][3], "value": SCALE[task] * out["dev"],
                     "split": "dev"})
    scores = score.compute(rows, refs, split="dev", baseline_encoder=BASELINE, source="dev results")
    by_alpha = {}
    for a in alphas:
        name = _alpha_encoder(a)
        if name in scores:
            by_alpha[a] = scores[name]["score"]
    best = max(by_alpha, key=lambda a: (by_alpha[a], -a))  # ties: the smaller α
    return best, by_alpha, scores


def selection_references(refs):
    """The references with each benchmark task's main metric only: SF's F1 chooses α (its CER is
    reported, and scored on test, but its dev value is not part of the choice)."""
    main = {t.lower(): spec[3].lower() for t, spec in TASKS.items()}
    tasks = {}
    for task, metrics in refs["tasks"].items():
        want = main.get(task.lower())
        tasks[task] = {m: p for m, p in metrics.items() if want is None or m.lower() == want}
    return dict(refs, tasks=tasks)


def _sweep_encoders(alphas, theta_prime, merged):
    out = []
    for a in alphas:
        if a == 1.0:  # θ̂ at α = 1 is θ′ itself
            out.append({"name": "theta_prime", "path": theta_prime["path"], "key": stage_key(theta_prime)})
        else:
            out.append({"name": _alpha_encoder(a), "path": merged["paths"][f"{a:g}"],
                        "key": stage_key(theta_prime) + f"{a:g}"})
    return out


def _alpha_encoder(alpha):
    return "theta_prime" if alpha == 1.0 else f"alpha{alpha:g}"


def run(out="results", work="exp/mini_superb", size="full", seed=0, jobs=None, device=None, tasks=None,
        pretrain=False, data_root=None, theta0=None, finetune_task=None, gpus=None, slurm=None):
    """``slurm``: None, or the options of executor.Slurm (partition, time_min, gpus_per_job, ...)."""
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
    # every input is checked before anything runs
    if data_root:
        inputs.check_data_root(data_root, tasks, finetune_task)
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
                    finetune_task, where)


def _run(out, work, size, seed, jobs, device, tasks, pretrain, data_info, theta0_path, theta0_kind, finetune_task,
         where):
    from speechft_upstream.benchmark import report

    started = time.time()
    out = Path(out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    total = 8
    alphas = tuple(SIZES[size]["alphas"])
    times = {}
    runs_on = where.kind if where else "here"
    say(f"speechft benchmark: {'SUPERB data' if data_info else 'mini-SUPERB'}, size {size}, work {work}, results "
        f"{out}, {jobs} job(s), device {device}, commands run: {runs_on}")

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
    # With --slurm every evaluation is submitted in stage 5, all at once.
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

        recipe = FINETUNE_TASKS[finetune_task][0]
        header(3, total, f"θ′: stable fine-tuning on {finetune_task} (downstream_recipes/{recipe} finetune)")
        theta_prime = stage_finetune(work, size, corpus_info, theta0, device, finetune_task)
        times["finetune"] = theta_prime

        header(4, total, "θ̂_α = (1−α)·θ0 + α·θ′ for α = " + ", ".join(f"{a:g}" for a in ALPHAS) + " (speechft merge)")
        merged = stage_merge(work, theta0, theta_prime)
        times["merge"] = merged

        header(5, total, "SUPERB protocol: frozen encoder, weighted sum, task heads (<task>.sh evaluate)")
        t5 = time.time()
        rest = [e for e in _sweep_encoders(alphas, theta_prime, merged)]
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
    say("encoders: FBANK, θ0, " + ", ".join("θ′ (α = 1)" if a == 1.0 else f"θ̂ α = {a:g}" for a in alphas)
        + f"; tasks: {', '.join(tasks)}")
    evals = stage_evaluate(work, size, corpus_info, encoders, device, jobs, tasks, slots=slots)
    times["evaluate"] = {"_seconds": time.time() - t5, "_reused": False}

    header(6, total, f"α chosen on the dev splits (dev SUPERB-style score over "
                     f"{', '.join(t for t in tasks if t not in NO_DEV)})")
    alpha, by_alpha, dev_scores = select_alpha(evals, alphas)
    for a, s in by_alpha.items():
        say(f"  α = {a:<5g} dev score {s:8.2f}" + ("   <- chosen" if a == alpha else ""))
    theta_hat = {"alpha": alpha, "encoder": _alpha_encoder(alpha),
                 "path": theta_prime["path"] if alpha == 1.0 else merged["paths"][f"{alpha:g}"]}

    header(7, total, "analyze: per-layer similarity to θ0 and weight change (speechft analyze)")
    analysis = stage_analyze(work, size, corpus_info, theta0, theta_prime, theta_hat, merged["paths"])
    times["analyze"] = analysis

    header(8, total, f"report -> {out}")
    context = {"tasks": tasks, "alphas": alphas, "size": size, "seed": seed, "corpus": corpus_info, "theta0": theta0, "theta_prime": theta_prime,
               "theta_hat": theta_hat, "by_alpha": by_alpha, "dev_scores": dev_scores, "evals": evals,
               "analysis": analysis, "sizes": SIZES[size], "jobs": jobs, "device": device,
               "finetune_task": finetune_task, "runs_on": runs_on,
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
