"""Running a plan's experiments (plan.py): each one's θ′, its merges, the encoders it evaluates,
its α chosen on dev, and the analysis of the baselines' θ′. pipeline.py calls these in order."""

from pathlib import Path

from speechft_upstream.benchmark import plan as plans
from speechft_upstream.benchmark.sizes import BASELINE, NO_DEV, SCALE, SIZES, TASKS, base_task
from speechft_upstream.benchmark.stage import Stage, header, say, stage_key
from speechft_upstream.benchmark.stages import analyze_audio, run_analyze, stage_finetune, stage_merge
from speechft_upstream.errors import SpeechFTError


def produce(entry, work, size, seed, corpus_info, theta0, device):
    """θ′ of one plan entry ({"path", ...}), or None for a multi-task merge (its θ′ is a merge)."""
    if entry.kind == "finetune":
        return stage_finetune(work, size, corpus_info, theta0, device, entry.task)
    if entry.kind == "baseline":
        module = plans.producer("baseline")
        return module.stage_baseline(work, size, corpus_info, theta0, device, entry.name, task=entry.task)
    if entry.kind == "unsupervised":
        module = plans.producer("unsupervised")
        language = module.stage_language_corpus(work, size, seed)
        return dict(module.stage_unsupervised(work, size, language, theta0, device), language_corpus=language)
    return None


def title(entry):
    if entry.kind == "finetune":
        from speechft_upstream.benchmark.sizes import FINETUNE_TASKS

        return (f"{entry.prime}: stable fine-tuning on {entry.task} (downstream_recipes/"
                f"{FINETUNE_TASKS[entry.task][0]} finetune)")
    if entry.kind == "baseline":
        return f"{entry.prime}: baseline '{entry.name}' on {entry.task}, the same budget (stage_baselines)"
    if entry.kind == "unsupervised":
        return f"{entry.prime}: unsupervised continued pre-training on {entry.options.get('language')}"
    return f"{entry.prime}: θ0 + mean of the task vectors of {', '.join(entry.sources)} (no training)"


def run_producers(plan, work, size, seed, corpus_info, theta0, device, index, total, times):
    """Every entry's θ′ in plan order (a multi entry after its sources). Returns {name: θ′ record}."""
    primes = {}
    for entry in plan:
        if entry.kind == "multi":
            continue
        header(index, total, title(entry))
        index += 1
        primes[entry.name] = produce(entry, work, size, seed, corpus_info, theta0, device)
        times["finetune" if entry.primary else f"theta_prime_{entry.name}"] = primes[entry.name]
    return primes


def run_merges(plan, work, theta0, primes, times):
    """{name: merge record} of every merged entry (the default one in merge/, as before)."""
    merges = {}
    for entry in plan:
        if not entry.merged:
            continue
        source = [primes[s] for s in entry.sources] if entry.kind == "multi" else primes[entry.name]
        merges[entry.name] = stage_merge(work, theta0, source, entry.merge_folder)
        times["merge" if entry.primary else entry.merge_folder] = merges[entry.name]
    return merges


def encoders_of(entry, alphas, prime, merged):
    """The evaluation encoders of one entry: θ̂_α for each α (α = 1: θ′), or θ′ alone."""
    if not entry.merged:
        return [{"name": entry.prime, "path": prime["path"], "key": stage_key(prime)}]
    out = []
    for a in alphas:
        if a == 1.0 and prime is not None:  # θ̂ at α = 1 is θ′ itself
            out.append({"name": entry.prime, "path": prime["path"], "key": stage_key(prime)})
        else:  # the multi-task merge's α = 1 is the mean θ′, a merged file
            key = stage_key(prime) if prime is not None else stage_key(merged)
            out.append({"name": entry.alpha_encoder(a), "path": merged["paths"][f"{a:g}"], "key": key + f"{a:g}"})
    return out


def extra_tasks(plan, primes, alphas):
    """[(task, data folder, encoder names)]: tasks evaluated only for some encoders (the second
    language's PR: FBANK, θ0 and the unsupervised experiment's encoders)."""
    out = []
    for entry in plan:
        if entry.extra_task:
            folder = Path(primes[entry.name]["language_corpus"]["dir"]) / "pr"
            names = [BASELINE, "theta0"] + [entry.alpha_encoder(a) for a in (alphas if entry.merged else (1.0,))]
            out.append((entry.extra_task, folder, names))
    return out


def select_alpha(evals, alphas, entry, tasks, extra=()):
    """The α with the highest dev score for one merged entry; (α, {α: dev score}, per-encoder
    detail). The dev score is over ``tasks`` (ASV, without dev, left out) and, for an entry with
    an extra task (the unsupervised one), that task too, each task weighted equally."""
    from speechft_upstream.evaluate import score

    chosen = set(tasks) | set(extra)
    refs = selection_references(references_with(score.load_references(score.MINI_REFERENCES), extra))
    rows = []
    for (name, task), out in evals.items():
        if task not in chosen or out.get("dev") is None:  # ASV: no dev split
            continue
        if task in extra and name not in {BASELINE, "theta0"} | {entry.alpha_encoder(a) for a in alphas}:
            continue
        spec = TASKS[base_task(task)]
        rows.append({"encoder": name, "task": task, "metric": spec[3], "value": SCALE[base_task(task)] * out["dev"],
                     "split": "dev"})
    scores = score.compute(rows, refs, split="dev", baseline_encoder=BASELINE, source="dev results")
    by_alpha = {a: scores[entry.alpha_encoder(a)]["score"] for a in alphas if entry.alpha_encoder(a) in scores}
    if not by_alpha:
        raise SpeechFTError(f"{entry.prime}: no dev score for any α")
    best = max(by_alpha, key=lambda a: (by_alpha[a], -a))  # ties: the smaller α
    return best, by_alpha, scores


def references_with(refs, extra):
    """The references with each extra task (PR_<LANGUAGE>) scored like its SUPERB task (PR): the
    same metric and perfect point; its lower point is this run's FBANK on that task."""
    if not extra:
        return refs
    tasks = dict(refs["tasks"])
    names = {t.lower(): t for t in tasks}
    for task in extra:
        base = names[base_task(task).lower()]
        tasks[task] = {m: dict(p, fbank=None) for m, p in tasks[base].items()}
    return dict(refs, tasks=tasks)


def selection_references(refs):
    """The references with each benchmark task's main metric only: SF's F1 chooses α (its CER is
    reported, and scored on test, but its dev value is not part of the choice)."""
    main = {t.lower(): spec[3].lower() for t, spec in TASKS.items()}
    tasks = {}
    for task, metrics in refs["tasks"].items():
        want = main.get(task.lower())
        if want is None and _known(task):  # PR_<LANGUAGE>: PR's metric
            want = main[base_task(task.upper()).lower()]
        tasks[task] = {m: p for m, p in metrics.items() if want is None or m.lower() == want}
    return dict(refs, tasks=tasks)


def _known(task):
    try:
        base_task(task.upper())
        return True
    except KeyError:
        return False


def choose(plan, evals, alphas, tasks, merges, primes):
    """{name: {"alpha", "encoder", "path", "by_alpha", "dev_scores"}} of every merged entry."""
    chosen = {}
    for entry in plan:
        if not entry.merged:
            continue
        extra = (entry.extra_task,) if entry.extra_task else ()
        alpha, by_alpha, dev_scores = select_alpha(evals, alphas, entry, tasks, extra)
        prime = primes.get(entry.name)
        path = prime["path"] if alpha == 1.0 and prime is not None else merges[entry.name]["paths"][f"{alpha:g}"]
        chosen[entry.name] = {"alpha": alpha, "encoder": entry.alpha_encoder(alpha), "path": path,
                              "by_alpha": by_alpha, "dev_scores": dev_scores,
                              "dev_tasks": [t for t in tasks if t not in NO_DEV] + list(extra)}
        if not entry.primary:
            for a, s in by_alpha.items():
                say(f"  {entry.hat}: α = {a:<5g} dev score {s:8.2f}" + ("   <- chosen" if a == alpha else ""))
    return chosen


def stage_analyze_baselines(work, size, corpus_info, theta0, plan, primes):
    """`speechft analyze` of the baselines' θ′ against θ0 (feature similarity and weight change,
    for claim (d)); its own stage, so the default analysis's key is the one of the runs before."""
    picks = [(e.prime, primes[e.name]["path"]) for e in plan if e.kind == "baseline"]
    if not picks:
        return None
    audio = analyze_audio(corpus_info)
    files = SIZES[size]["analyze_files"]
    stage = Stage(work / "analyze_baselines", {"theta0_key": stage_key(theta0), "files": files, "audio": str(audio),
                                               "models": {n: stage_key(primes[e.name]) for e in plan
                                                          if e.kind == "baseline" for n in [e.prime]}})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder}")
        return done
    return run_analyze(stage, theta0, picks, audio, files)
