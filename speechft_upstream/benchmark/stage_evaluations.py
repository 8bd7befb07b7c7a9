"""Stage 5 of the benchmark: the SUPERB protocol for every encoder × task and seed (the recipes'
``evaluate``), cached per encoder × task; early background runs and stage 5's hand-off of them."""

import concurrent.futures
import sys
import threading
from pathlib import Path

from speechft_upstream.benchmark import er_folds
from speechft_upstream.benchmark.sizes import BASELINE, ENCODER_LABELS, EXTRA_METRICS, NO_HEAD, TASKS, eval_budget
from speechft_upstream.benchmark.stage import Stage, run_cmd, say, stage_key
from speechft_upstream.benchmark.task_runs import eval_qbe, read_run, recipe_cmd, task_data
from speechft_upstream.errors import SpeechFTError


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
