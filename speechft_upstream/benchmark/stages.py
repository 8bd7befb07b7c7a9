"""The benchmark's cached stages: corpus, θ0, θ′, merges, evaluations, analysis (see pipeline.py)."""

import concurrent.futures
import json
import os
import shutil
import sys
import threading
from pathlib import Path

from speechft_upstream.benchmark import er_folds
from speechft_upstream.benchmark.sizes import (ALPHAS, BASELINE, ENCODER_LABELS, EXTRA_METRICS, FINETUNE_TASKS,
                                               NO_HEAD, PAPER_ALPHA, SIZES, TASKS, eval_budget)
from speechft_upstream.benchmark.stage import Stage, run_cmd, say, speechft_cmd, stage_key
from speechft_upstream.benchmark.task_runs import dev_values as _dev_values
from speechft_upstream.benchmark.task_runs import eval_qbe, read_run, recipe_cmd, task_data
from speechft_upstream.errors import SpeechFTError


def stage_corpus(work, size, seed):
    from speechft_upstream.data import corpus as corpus_module

    stage = Stage(work / "corpus", {"size": SIZES[size]["corpus"], "seed": seed,
                                    "format": corpus_module.FORMAT_VERSION})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} (eSpeak NG corpus, {SIZES[size]['corpus']} size, seed {seed})")
        return done
    stage.start()
    data = stage.folder / "data"
    if SIZES[size]["corpus"] == "tiny":  # the tests' size: not offered by the CLI
        corpus_module.generate(data, seed=seed, size="tiny", progress=lambda m: say(f"[corpus] {m}"))
    else:
        cmd = speechft_cmd("corpus", "--out", data, "--seed", seed)
        if SIZES[size]["corpus"] == "quick":
            cmd.append("--quick")
        say("$ speechft " + " ".join(map(str, cmd[3:])))
        run_cmd(cmd)
    manifest = json.loads((data / "corpus.json").read_text())
    for task, (_, folder, *_rest) in TASKS.items():
        if not (data / folder).is_dir():
            raise SpeechFTError(f"{data}: the corpus has no {folder}/ folder for {task}")
    counts = {}
    for u in manifest["utterances"]:
        counts[u["task"]] = counts.get(u["task"], 0) + 1
    info = {"dir": str(data.resolve()), "speakers": len(manifest["speakers"]), "minutes": round(manifest["hours"] * 60, 1),
            "utterances": counts, "espeak_ng": manifest.get("espeak_ng"), "size": manifest.get("size")}
    return stage.finish(info, ["data/corpus.json"])


def stage_theta0(work, size, seed, corpus_info, pretrain=False):
    """The shipped θ0 (sha256 checked); ``pretrain``: its recipe run on this corpus instead."""
    from speechft_upstream.pretrain import shipped

    mode = "pretrain" if pretrain else SIZES[size]["theta0"]
    if mode == "shipped":
        path = shipped.verified()
        params = {"mode": mode, "path": str(path), "sha256": shipped.SHA256}
    else:
        params = {"mode": mode, "size": size, "seed": seed, "corpus": corpus_info["dir"],
                  "corpus_key": stage_key(corpus_info)}
    stage = Stage(work / "theta0", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']} ({done['source']})")
        return done
    stage.start()
    if mode == "shipped":
        say(f"θ0: {path} (sha256 {shipped.SHA256[:16]}…, checked; rebuilt by `{shipped.REBUILD}`)")
        return stage.finish({"path": str(path), "sha256": shipped.SHA256, "source": f"shipped {path.name} "
                             f"(speechft pretrain --recipe mini-superb on the default corpus)"}, [str(path)])
    out = stage.folder / "theta0.pt"
    if mode == "pretrain":
        cmd = speechft_cmd("pretrain", "--recipe", "mini-superb", "--corpus", corpus_info["dir"], "-o", out,
                           "--seed", seed)
        if size == "smoke":  # the tests' size: the recipe's code paths, a few steps
            cmd += ["--steps", 3, "--iter2-steps", 2, "--clusters", 8]
        source = "speechft pretrain --recipe mini-superb" + (" (smoke size)" if size == "smoke" else "")
    else:
        cmd = speechft_cmd("make-tiny", "--arch", "hubert", "--seed", seed, "-o", out)
        source = "speechft make-tiny --arch hubert (random weights, the smoke test's size)"
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    if not out.is_file():
        raise SpeechFTError(f"{cmd[3]} wrote no {out}")
    from speechft_upstream.pretrain.data import sha256_of

    return stage.finish({"path": str(out.resolve()), "sha256": sha256_of(out), "source": source}, ["theta0.pt"])


def stage_finetune(work, size, corpus_info, theta0, device, task="PR"):
    """θ′: stable fine-tuning of θ0 on ``task`` (FINETUNE_TASKS) with the size's budget."""
    ft = SIZES[size]["finetune"]
    recipe, folder, metric = FINETUNE_TASKS[task]
    params = {"theta0": theta0["path"], "theta0_key": stage_key(theta0), **ft, "device": device}
    if task != "PR":  # PR's key and folder as before, so existing caches stay valid
        params["task"] = task
    stage = Stage(work / f"finetune_{task.lower()}", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']}")
        return done
    stage.start()
    exp = stage.folder / "exp"
    cmd = recipe_cmd(task, "finetune", Path(corpus_info["dir"]) / folder, exp, ft["steps"], ft["batch"], ft["lr"],
                     ckpt=theta0["path"], beta=ft["beta"], device=device, eval_every=ft.get("eval_every"),
                     workers=0 if "workers" not in SIZES[size] else SIZES[size]["workers"])
    if ft.get("train_hours"):
        cmd += ["--train-hours", ft["train_hours"]]
    say(f"$ downstream_recipes/{recipe} finetune --steps {ft['steps']} --batch-size {ft['batch']} --lr {ft['lr']} "
        f"--beta {ft['beta']} ...  (log {exp / 'train.log'})")
    run_cmd(cmd, log=stage.folder / "run.log", stream=True)
    path = exp / "theta_prime.pt"
    if not path.is_file():
        raise SpeechFTError(f"{recipe} finetune wrote no {path}")
    dev = _dev_values(exp / "train.log", metric)
    return stage.finish({"path": str(path.resolve()), f"dev_{metric}": dev}, ["exp/theta_prime.pt"])


def stage_merge(work, theta0, theta_prime, folder="merge"):
    """θ̂_α = θ0 + α·τ for α in ALPHAS; ``theta_prime`` a list: the multi-task merge, τ the mean of
    their task vectors (speechft merge's linear method with several --finetuned)."""
    primes = theta_prime if isinstance(theta_prime, list) else [theta_prime]
    params = {"theta0_key": stage_key(theta0), "alphas": ALPHAS}
    if isinstance(theta_prime, list):
        params["theta_prime_keys"] = [stage_key(p) for p in primes]
    else:  # the key of the runs before multi-task merges, so their merges are reused
        params["theta_prime_key"] = stage_key(theta_prime)
    stage = Stage(work / folder, params)
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} ({len(done['paths'])} merged files)")
        return done
    stage.start()
    cmd = speechft_cmd("merge", "--base", theta0["path"], "--finetuned", *[p["path"] for p in primes],
                    "--alpha", ",".join(f"{a:g}" for a in ALPHAS), "-o", stage.folder / "theta_hat_alpha{alpha}.pt",
                    "--force")
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    paths = {f"{a:g}": str((stage.folder / f"theta_hat_alpha{a:g}.pt").resolve()) for a in ALPHAS}
    for p in paths.values():
        if not Path(p).is_file():
            raise SpeechFTError(f"speechft merge wrote no {p}")
    return stage.finish({"paths": paths}, [Path(p).name for p in paths.values()])


def _eval_one(stage, task, data, encoder, budget, device, slots=None):
    if slots is not None:  # a limit on runs at a time shared with the background runs
        with slots:
            return _eval_one(stage, task, data, encoder, budget, device)
    stage.start()
    exp = stage.folder / "exp"
    upstream, ckpt = ("fbank", None) if encoder["name"] == BASELINE else ("speechft_hubert", encoder["path"])
    if task in NO_HEAD:
        return eval_qbe(stage, data, exp, upstream, ckpt, budget, device)
    folds = stage.params.get("folds")  # ER on five IEMOCAP sessions: every fold (er_folds.py)
    cmd = recipe_cmd(task, "evaluate", data, exp, budget["steps"], budget["batch"], budget["lr"], upstream=upstream,
                     ckpt=ckpt, device=device, eval_every=budget["eval_every"], patience=budget["patience"],
                     seeds=budget["seeds"], feature_cache=budget["feature_cache_mb"],
                     accumulate=budget.get("accumulate", 1), workers=budget.get("workers", 0),
                     fold=None if folds else "fold1")
    if budget.get("overrides"):
        cmd += ["-o", budget["overrides"]]
    run_cmd(cmd, log=stage.folder / "run.log", stream=False)
    seeds, kept, paths = {}, [], {name: {} for name in er_folds.ITEM_FILES}
    for seed in budget["seeds"]:
        if folds:
            run, files, found = er_folds.read_seed(stage.folder, seed, folds)
        else:
            folder = exp / f"seed{seed}"
            run = read_run(task, folder)
            files = [f"exp/seed{seed}/{n}" for n in ("results.json", "items.json", "dev_items.json")
                     if (folder / n).is_file()]
            found = {n: str(folder / f"{n}.json") for n in er_folds.ITEM_FILES if (folder / f"{n}.json").is_file()}
        seeds[str(seed)] = run
        kept += files
        for name, path in found.items():
            paths[name][str(seed)] = path
    values = [v["test"] for v in seeds.values()]
    devs = [v["dev"] for v in seeds.values()]
    out = {"test": sum(values) / len(values), "dev": None if None in devs else sum(devs) / len(devs),
           "seeds": seeds, **paths}
    if task == "ER":
        out["folds"] = folds or ["fold1"]
    if EXTRA_METRICS.get(task):
        out["metrics"] = {}
        for name, _ in EXTRA_METRICS[task].values():
            tests = [v["metrics"][name]["test"] for v in seeds.values()]
            others = [v["metrics"][name]["dev"] for v in seeds.values()]
            out["metrics"][name] = {"test": sum(tests) / len(tests),
                                       "dev": None if None in others else sum(others) / len(others)}
    return stage.finish(out, kept)


class Handoff:
    """Evaluations started in the background that stage 5 takes over: the background claims each
    run before starting it; after ``stop()`` it starts none, and stage 5 runs every unclaimed one
    on all its slots (a background thread left alone would run them one at a time, one core idle)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stopped = False
        self._claimed = set()

    def claim(self, key):
        with self._lock:
            if not self._stopped:
                self._claimed.add(key)
            return not self._stopped

    def stop(self):
        """The runs the background has claimed (finished, or the one it is in)."""
        with self._lock:
            self._stopped = True
            return set(self._claimed)


def stage_evaluate(work, size, corpus_info, encoders, device, jobs, tasks, background=False, slots=None,
                   handoff=None, skip=(), data_dirs=None):
    """SUPERB protocol for every encoder × task, each with every seed; ``jobs`` recipes at a time.
    ``data_dirs``: {task: folder} for tasks whose data is not the corpus's (a second language's PR).

    ``background``: started early on the core another stage leaves free (one line per finished
    run, no progress bar), each run claimed from ``handoff`` first; stage 5 stops it and runs the
    rest itself. ``skip``: (encoder, task) runs not to start here (the background's, running).
    """
    from tqdm import tqdm

    todo, results = [], {}
    for encoder in encoders:
        for task in tasks:
            budget = eval_budget(size, task)
            params = {"encoder": encoder["name"], "encoder_key": encoder.get("key"), "task": task, **budget,
                      "device": device, "corpus_key": stage_key(corpus_info)}
            if task == "ER" and len(er_folds.folds_of(Path(corpus_info["dir"]) / TASKS[task][1])) > 1:
                params["folds"] = list(er_folds.FOLDS)  # one session (the mini corpus): the key as before
            if task in (data_dirs or {}):  # only these: the keys of the corpus's tasks stay as they were
                params["data"] = str(data_dirs[task])
            stage = Stage(work / "evaluate" / encoder["name"] / task.lower(), params)
            done = stage.cached()
            if done:
                results[(encoder["name"], task)] = done
            elif (encoder["name"], task) not in skip:
                data = (data_dirs or {}).get(task) or task_data(task, corpus_info["dir"], work)
                todo.append((stage, task, data, encoder, budget))

    def line(name, task, out):
        spread = ", ".join(f"{v['test']:.4f}" for v in out["seeds"].values())
        spread = "one deterministic run" if out.get("deterministic") else f"seeds: {spread}"
        if len(out.get("folds") or ()) > 1:  # ER: each seed's value is the mean of the folds
            spread += f"; each the mean of {len(out['folds'])} folds"
        dev = "n/a" if out["dev"] is None else f"{out['dev']:.4f}"
        return (f"{ENCODER_LABELS.get(name, name):>14} {task:<4} dev {dev}  test {out['test']:.4f} "
                f"({spread}; {out['_seconds']:.0f} s)")

    if background:
        failures = []
        for stage, task, data, enc, budget in todo:
            if handoff is not None and not handoff.claim((enc["name"], task)):
                break  # stage 5 has taken over the rest
            try:
                out = _eval_one(stage, task, data, enc, budget, device, slots)
                results[(enc["name"], task)] = out
                say("\n  [evaluate, in the background] " + line(enc["name"], task, out).strip())
            except Exception as err:
                failures.append(f"{enc['name']}/{task}: {err}")
        return results, failures
    if results:
        say(f"reusing {len(results)} finished evaluation(s)")
    if not todo:
        return results
    seeds = max(len(t[4]["seeds"]) for t in todo)
    say(f"{len(todo)} evaluation run(s) ({seeds} seeds each" + ("; QbE one run" if any(t[1] in NO_HEAD for t in todo)
                                                             else "") + f"), {jobs} at a time; each run's log: "
        f"{work / 'evaluate'}/<encoder>/<task>/run.log")
    failures = []
    bar = tqdm(total=len(todo), desc="evaluate", unit="run", file=sys.stderr, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_eval_one, stage, task, data, enc, budget, device, slots): (enc["name"], task)
                   for stage, task, data, enc, budget in todo}
        for future in concurrent.futures.as_completed(futures):
            name, task = futures[future]
            try:
                out = future.result()
                results[(name, task)] = out
                bar.write("  " + line(name, task, out), file=sys.stderr)
            except Exception as err:  # report all failures at the end
                failures.append(f"{name}/{task}: {err}")
                bar.write(f"  {name} {task}: FAILED", file=sys.stderr)
            bar.update(1)
    bar.close()
    if failures:
        raise SpeechFTError("evaluation run(s) failed:\n" + "\n".join(failures))
    return results


def stage_analyze(work, size, corpus_info, theta0, theta_prime, theta_hat, merged_paths):
    """θ′, the chosen θ̂ (when it is not θ′) and θ̂ at the paper's α 0.25 (when merged and not chosen)."""
    audio = analyze_audio(corpus_info)
    files = SIZES[size]["analyze_files"]
    picks = [("theta_prime", theta_prime["path"])]
    if theta_hat["alpha"] != 1.0:
        picks.append((f"theta_hat_alpha{theta_hat['alpha']:g}", theta_hat["path"]))
    if PAPER_ALPHA != theta_hat["alpha"] and f"{PAPER_ALPHA:g}" in merged_paths:
        picks.append((f"merged_alpha{PAPER_ALPHA:g}", merged_paths[f"{PAPER_ALPHA:g}"]))
    stage = Stage(work / "analyze", {"theta0_key": stage_key(theta0), "theta_prime_key": stage_key(theta_prime),
                                     "theta_hat": theta_hat, "models": [name for name, _ in picks],
                                     "files": files, "audio": str(audio)})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder}")
        return done
    return run_analyze(stage, theta0, picks, audio, files)


def analyze_audio(corpus_info):
    """Held-out audio the analysis reads: the ASR layout's LibriSpeech test split."""
    return Path(corpus_info.get("analyze_audio") or Path(corpus_info["dir"]) / "asr" / "LibriSpeech" / "test")


def run_analyze(stage, theta0, picks, audio, files):
    """`speechft analyze` of ``picks`` ([(name, path)]) against θ0 into the stage's out/."""
    from speechft_upstream.evaluate.analyze import OUTPUT_NAMES

    stage.start()
    # readable model names in the table: files named after what they are
    models = []
    for name, path in picks:
        link = stage.folder / f"{name}.pt"
        try:
            os.symlink(path, link)
        except OSError:
            shutil.copyfile(path, link)
        models.append(link)
    say(f"$ speechft analyze --base θ0 --models {' '.join(n for n, _ in picks)} --audio {audio} --max-files {files}")
    run_cmd(speechft_cmd("analyze", "--base", theta0["path"], "--models", *models, "--audio", audio,
                         "-o", stage.folder / "out", "--max-files", files))
    return stage.finish({"dir": str((stage.folder / "out").resolve())}, [f"out/{n}" for n in OUTPUT_NAMES])
