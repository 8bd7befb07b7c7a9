"""run.json (what produced a report: versions, settings, seeds, times, inputs with sha256) and
the report's statistics section."""

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

from speechft_upstream.benchmark.sizes import NO_DEV, NO_HEAD, REPO, SCALE, TASKS, UNIT, eval_budget
from speechft_upstream.benchmark.stage import THREAD_SETTINGS
from speechft_upstream.pretrain.data import sha256_of

LIBRARIES = ("torch", "torchaudio", "s3prl", "numpy", "scipy", "soundfile", "editdistance", "espeakng-loader",
             "transformers", "huggingface_hub", "tqdm", "matplotlib", "pyyaml")

# What the evaluation does to be repeatable, and what was checked (this machine type, 2 cores).
DETERMINISM = {
    "evaluate": "deterministic: every runner process uses one thread (OMP_NUM_THREADS=MKL_NUM_THREADS=1, forced), "
                "no data-loader workers, and s3prl's --seed (random, numpy, torch; the runner re-seeds before every "
                "evaluation pass). Checked: the same FBANK PR evaluation (400 steps, batch 8) on two separately "
                "generated default corpora gave identical dev and test values (test PER 59.81, the value of the "
                "2026-12-01 fresh-clone run; the README's own commit 739c0d3 gives 59.81 too, so its 58.50 does not "
                "repeat here); a seed run inside a multi-seed process equals the same seed run alone; "
                "θ0-architecture PR evaluations on the test-size corpus with 1 and 2 threads gave identical values. The spread across seeds "
                "(head initialisation, data order) is measured: seed_values / ci95 in results.json.",
    "corpus": "deterministic: two generations of the default corpus are byte-identical (every file's sha256).",
    "feature_cache": "the frozen upstream runs once per utterance, alone (not padded into its batch): features "
                     "depend on the audio only, not on batch composition or data order (compat/feature_cache.py).",
}


def sha256_tree(folder):
    """sha256 of a folder: of the `sha256sum`-style manifest ("<sha256>  <relative path>\\n" per
    file, sorted by path). Returns (digest, number of files)."""
    folder = Path(folder)
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        lines.append(f"{sha256_of(path)}  {path.relative_to(folder).as_posix()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest(), len(lines)


def _versions():
    from importlib import metadata

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git_commit():
    try:
        proc = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode:
        return None
    return {"commit": proc.stdout.strip(), "modified": bool(dirty.stdout.strip())}


def _file(path, **extra):
    return {"path": str(path), "sha256": sha256_of(path) if path and Path(path).is_file() else None, **extra}


def evaluation_cost(evals):
    """CPU seconds summed over every evaluation run, by part (compat/timing.py's figures)."""
    parts = {"runs": 0, "startup": 0.0, "upstream_forward_train": 0.0, "upstream_forward_evaluate": 0.0,
             "train_other": 0.0, "evaluate_other": 0.0, "steps": 0}
    for out in evals.values():
        for seed in out.get("seeds", {}).values():
            parts["runs"] += len(seed.get("folds") or ()) or 1  # five-fold ER: one runner per fold
            for mode in ("train", "evaluate"):
                timing = (seed.get("timing") or {}).get(mode) or {}
                for key in ("startup", "upstream_forward_train", "upstream_forward_evaluate", "train_other",
                            "evaluate_other"):
                    parts[key] += timing.get(key) or 0.0
                if mode == "train":
                    parts["steps"] += timing.get("steps") or 0
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in parts.items()}


def run_record(context, rows):
    from speechft_upstream import __version__

    size = context["size"]
    hat = context["theta_hat"]
    data = context["corpus"]
    if data.get("data_root"):  # real data: its file list's fingerprint, not every byte (inputs.py)
        corpus = {"path": data["dir"], "data_root": True, "fingerprint": data["fingerprint"], "files": data["files"],
                  "bytes": data["bytes"], "folders": data["folders"], "fingerprint_of": data["fingerprint_of"]}
    else:
        corpus_digest, corpus_files = sha256_tree(data["dir"])
        corpus = {"path": data["dir"], "sha256": corpus_digest, "files": corpus_files,
                  "sha256_of": "the sorted `sha256sum` manifest of every file under path"}
    return {
        "speechft": {"version": __version__, "git": _git_commit()},
        "python": sys.version.split()[0], "platform": {"system": platform.platform(), "machine": platform.machine(),
                                                        "cpus": os.cpu_count()},
        "libraries": _versions(),
        "settings": {"size": size, "tasks": list(context["tasks"]), "alphas": list(context["alphas"]),
                     "jobs": context["jobs"], "device": context["device"], "runs_on": context.get("runs_on"),
                     "finetune_task": context.get("finetune_task", "PR"),
                     "experiments": [{"name": e.name, "kind": e.kind, "task": e.task, "merged": e.merged,
                                      "theta_prime": e.prime, "theta_hat": e.hat, "sources": list(e.sources)}
                                     for e in context.get("plan") or []],
                     "skipped_experiments": context.get("skipped", []),
                     "threads_per_run": THREAD_SETTINGS,
                     "finetune": context["sizes"]["finetune"],
                     "evaluate": {t: eval_budget(size, t) for t in context["tasks"]}},
        "seeds": {"corpus": context["seed"], "theta0": context["seed"],
                  "evaluation": list(context["sizes"].get("seeds", ()))},
        "stage_times": {k: {"seconds": s, "reused": r} for k, (s, r) in context["times"].items()},
        "wall_seconds": round(context["wall_seconds"], 1),
        "evaluation_cost_cpu_seconds": evaluation_cost(context["evals"]),
        "corpus": corpus,
        "theta0": _file(context["theta0"]["path"], source=context["theta0"].get("source")),
        "theta_prime": _file(context["theta_prime"]["path"]),
        "theta_hat": _file(hat["path"], alpha=hat["alpha"], encoder=hat["encoder"]),
        "determinism": DETERMINISM,
        # none found: every stage above repeats bit for bit with the same code, seed and machine type
        "nondeterministic_stages": [],
        "dev_resolution": context.get("dev_resolution"),
    }


def write(out, context, rows):
    from speechft_upstream.benchmark import summary
    from speechft_upstream.checkpoints import files

    from speechft_upstream.evaluate import score

    context["dev_resolution"] = summary.dev_resolution(context["evals"], context["tasks"])
    refs = score.load_references(score.MINI_REFERENCES)["tasks"]
    scored = [t for t in context["tasks"] if t not in NO_DEV]  # the tasks of the dev score
    for task, r in context["dev_resolution"].items():
        if r:  # the same difference in the units of the dev score that chooses α
            ref = next(v for k, v in refs.items() if k.upper() == task)
            perfect = next(v["sota"] for m, v in ref.items() if m.upper() == TASKS[task][3])
            # the resolution is in percentage points (items are fractions): the span in the same
            span = abs(perfect - SCALE[task] * context["evals"][("fbank", task)]["dev"])
            span *= 1.0 if UNIT[task] == "%" else 100.0
            r["dev_score_points"] = r["smallest_difference"] * 1000 / len(scored) / span if span else None
    record = run_record(context, rows)
    files.write_json_atomic(record, Path(out) / "run.json", indent=2, ensure_ascii=False, default=str)
    tests = {f"{a} vs {b} / {t}": v for (a, b, t), v in (context.get("tests") or {}).items()}
    files.write_json_atomic(tests, Path(out) / "significance.json", indent=2, ensure_ascii=False)
    return [Path(out) / "run.json", Path(out) / "significance.json"]


def statistics_lines(context, rows):
    """The report's section on seeds, CIs, paired tests and what each dev split resolves."""
    seeds = list(context["sizes"].get("seeds", ()))
    lines = ["## Seeds, confidence intervals, significance", "",
             f"Every encoder × task was evaluated with {len(seeds)} seeds ({', '.join(map(str, seeds))}: the "
             "runner's --seed, i.e. head initialisation and data order)"
             + ("; QbE once: DTW on frozen features has no head and no randomness, so there is no seed spread "
                "and no CI (one run, recorded as deterministic)" if any(t in NO_HEAD for t in context["tasks"]) else "")
             + "; heads train until "
             f"{context['sizes'].get('patience')} dev evaluations in a row bring no improvement, or the most steps "
             "(run.json `settings.evaluate`). A cell is the mean ± the half-width of the 95 % t-interval over the "
             "seeds. † θ̂ differs from θ′, ‡ θ̂ (or θ′) differs from θ0, p < 0.05, paired test on the test items "
             "(seed s paired with seed s; accuracies: McNemar's exact test at item level, PER: paired bootstrap over "
             "utterances, 10,000 resamples; `significance.json`).", "",
             "| task | θ′ vs θ0 p | θ̂ vs θ′ p | θ̂ vs θ0 p |", "|---|---:|---:|---:|"]
    by = {(r["encoder"], r["task"]): r for r in rows}

    def fmt(p):
        return "n/a" if p is None else f"{p:.3g}"

    for task in context["tasks"]:
        lines.append(f"| {task} | {fmt(by[('theta_prime', task)].get('p_vs_theta0'))} | "
                     f"{fmt(by[('theta_hat', task)].get('p_vs_theta_prime'))} | "
                     f"{fmt(by[('theta_hat', task)].get('p_vs_theta0'))} |")
    untested = [t for t in context["tasks"] if by[("theta_hat", t)].get("p_vs_theta0") is None]
    if untested:
        why = {"SF": "F1 and CER are computed over the decoded slot strings, not per-item outcomes of one metric",
               "SD": "the DER comes from the RTTMs of whole recordings", "ASV": "EER is a property of the trial set",
               "QBE": "MTWV is a property of the detection set", "ASR": "the asr expert's <split>-noLM-hyp.ark files are not read by evaluate/items.py, so no items.json"}
        lines += ["", "n/a: no p-value could be computed (null in results.json; no † / ‡): "
                  + "; ".join(f"{t}: {why.get(t, 'no per-item predictions were logged')}" for t in untested) + "."]
    no_ci = [t for t in context["tasks"] if by[("theta0", t)].get("ci95") is None]
    if no_ci:
        lines += ["", f"No 95 % CI for {', '.join(no_ci)}: one run (null in results.json)."]
    resolution = context.get("dev_resolution") or {}
    lines += ["", "What the dev splits resolve (they choose α): the smallest difference between two encoders' dev "
              "values that is larger than noise at 95 % (1.96 · √2 · bootstrap standard error of the metric on "
              "the dev items, θ0's last dev pass, mean over seeds; a paired comparison resolves somewhat less). "
              "In dev-score points: that difference × 1000 / (tasks × (perfect − FBANK dev)).", "",
              "| task | dev items | standard error (points) | smallest resolved difference (points) | "
              "in dev-score points |", "|---|---:|---:|---:|---:|"]
    for task in context["tasks"]:
        r = resolution.get(task)
        if r:
            score = "n/a" if r.get("dev_score_points") is None else f"{r['dev_score_points']:.1f}"
            lines.append(f"| {task} {TASKS[task][3]} | {r['items']} | {r['standard_error']:.2f} | "
                         f"{r['smallest_difference']:.2f} | {score} |")
        else:
            lines.append(f"| {task} | n/a | | | |")
    lines += ["", "Determinism: " + DETERMINISM["evaluate"], ""]
    return lines
