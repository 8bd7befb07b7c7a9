"""Merging encoders pre-trained apart: linear interpolation against permutation-aligned merging (± REPAIR).

    python benchmarks/merge_apart.py --pair speech_s0.pt:speech_s1.pt --pair speech_s0.pt:music_s0.pt \\
        --speech-corpus speech/ --music-corpus music/ --out benchmarks/merge_apart [--recipe TASK:PAIR:ALPHA ...]

For every pair A:B and every α of the sweep, θ = (1 − α)·A + α·B′ with B′ = B (``linear``), B
aligned to A (``aligned``: ``speechft merge --align-audio``), or aligned and then REPAIRed
(``aligned_repair``: ``--repair-audio``). The alignment / REPAIR audio is the same for every pair:
``--align-seconds`` of speech training audio plus as much music training audio (no test clip).

Each merged model is scored with a frozen-feature probe: every layer's hidden states averaged
over the clip, concatenated, standardised, and a logistic regression trained on the task's train
split, accuracy on its test split. Seeds draw the probe's training subset (``--subset`` of it),
so the 95% t-interval over seeds covers the probe's data, not pre-training. Tasks: mini-SUPERB's
utterance-level ones on the speech corpus (ks, sid, er) and the four music tasks (pitch, chord,
instrument, genre). ``--recipe TASK:PAIR:ALPHA[:METHOD]`` also runs ``downstream_recipes/<task>.sh evaluate``
(s3prl's runner, a trained downstream head; music tasks through er.sh) on the merges of that point.

Writes results.csv (one row per model × task × seed), summary.json and results.md to ``--out``.
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("linear", "aligned", "aligned_repair")
SPEECH_TASKS = ("ks", "sid", "er")
MUSIC_TASKS = ("pitch", "chord", "instrument", "genre")


def say(message):
    print(f"[merge_apart {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---- data: (path, label) lists per task, from the corpus layouts the recipes read ----

def task_items(task, speech, music):
    """{'train': [(path, label)], 'test': [...]} for one task."""
    if task in MUSIC_TASKS:
        return _emotion_layout(Path(music) / task)
    root = Path(speech) / task
    if task == "er":
        return _emotion_layout(root)
    if task == "ks":  # speech_commands folders: <split>/<word>/*.wav
        return {split: [(p, p.parent.name) for p in sorted((root / split).glob("*/*.wav"))
                        if p.parent.name != "_background_noise_"] for split in ("train", "test")}
    if task == "sid":  # voxceleb1: iden_split.txt, 1 train / 3 test, speaker = first path part
        out = {"train": [], "test": []}
        for line in (root / "iden_split.txt").read_text().split("\n"):
            if line.strip():
                kind, rel = line.split()
                if kind in ("1", "3"):
                    out["train" if kind == "1" else "test"].append((root / "all" / "wav" / rel, rel.split("/")[0]))
        return out
    raise SystemExit(f"merge_apart: error: unknown task {task!r}")


def _emotion_layout(root):
    """IEMOCAP-style meta JSON (s3prl's emotion downstream); paths are relative to the task folder."""
    out = {}
    for split in ("train", "test"):
        meta = json.loads((root / "meta_data" / "Session1" / f"{split}_meta_data.json").read_text())
        out[split] = [(root / m["path"], m["label"]) for m in meta["meta_data"]]
    return out


def cap(items, n):
    """At most n items, spread evenly over the (label-sorted) list so every class keeps some."""
    if n is None or len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def audio_folder(out, speech, music, seconds):
    """A folder of links: ``seconds`` of speech training audio, then as much music training audio."""
    import soundfile

    folder = out / "align_audio"
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = [("music", Path(music), json.loads((Path(music) / "music.json").read_text())["clips"])]
    if speech:
        sources.insert(0, ("speech", Path(speech), json.loads((Path(speech) / "corpus.json").read_text())["utterances"]))
    for kind, root, entries in sources:
        entries = [e for e in entries if e.get("split") == "train"]
        total, stride = 0.0, max(1, len(entries) // 200)
        for i, entry in enumerate(entries[::stride]):
            path = (root / entry["path"]).resolve()
            (folder / f"{kind}_{i:04d}{path.suffix}").symlink_to(path)
            total += soundfile.info(str(path)).duration
            if total >= seconds:
                break
    return folder


# ---- models: the merges, through `speechft merge` ----

def merges(pair_name, a, b, alphas, audio, work):
    """{(method, α): checkpoint path}; α = 0 is A, α = 1 is B (B aligned for the aligned methods)."""
    from speechft_upstream.merge import run as merge_run

    out = {}
    for method in METHODS:
        folder = work / pair_name / method
        folder.mkdir(parents=True, exist_ok=True)
        paths = [folder / f"alpha{alpha:g}.pt" for alpha in alphas]
        todo = [(al, p) for al, p in zip(alphas, paths) if not p.exists()]
        if todo:
            options = {"base": str(a), "finetuned": [str(b)], "alpha": ",".join(f"{al:g}" for al, _ in todo),
                       "output": str(folder / "alpha{alpha}.pt"), "force": True}
            if method != "linear":
                options["align_audio"] = str(audio)
            if method == "aligned_repair":
                options["repair_audio"] = str(audio)
            started = time.time()
            merge_run.run(options, progress=False)
            say(f"{pair_name} {method}: merged α {options['alpha']} in {time.time() - started:.0f} s")
        out.update({(method, al): p for al, p in zip(alphas, paths)})
    return out


# ---- evaluation: a frozen-feature probe ----

def weights_digest(ckpt):
    """sha256 of the weights alone (not the provenance): equal merges (α = 0 is A) share features."""
    import hashlib

    import torch

    from speechft_upstream.checkpoints import files

    state, family = files.read_encoder(ckpt)
    h = hashlib.sha256()
    for name, tensor in sorted(files.weights(state, family).items()):
        h.update(name.encode())
        h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def items_digest(items):
    import hashlib

    return hashlib.sha256("\n".join(str(p) for p, _ in items).encode()).hexdigest()[:10]


def pooled_features(ckpt, items, cache):
    """(N, layers × D) clip means of every hidden state, cached."""
    import numpy as np

    if cache.exists():
        return np.load(cache)
    import soundfile
    import torch

    from speechft_upstream.checkpoints import files
    from speechft_upstream.merge.align_stats import build_model, hidden_states

    state, family = files.read_encoder(ckpt)
    model = build_model(state, family)
    rows = []
    with torch.no_grad():
        for path, _ in items:
            wav, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
            states = hidden_states(model, family, torch.from_numpy(wav).unsqueeze(0))
            rows.append(torch.cat([h.mean(0) for h in states]).double().numpy())
    feats = np.stack(rows)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, feats)
    tmp.replace(cache)  # another run of this script may be reading the same cache
    return feats


def probe(train_x, train_y, test_x, test_y, seed, subset):
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    keep = rng.choice(len(train_y), max(2, int(round(subset * len(train_y)))), replace=False)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.5))
    clf.fit(train_x[keep], np.asarray(train_y)[keep])
    return float((clf.predict(test_x) == np.asarray(test_y)).mean())


RECIPE_ARGS = ("--batch-size 16 --lr 5e-3 --workers 0 --device cpu -o config.runner.gradient_accumulate_steps=1,,"
               "config.runner.eval_step=50,,config.runner.log_step=50,,config.runner.save_step=50")


def recipe_score(task, ckpt, data, exp, steps, seed, extra=RECIPE_ARGS):
    """downstream_recipes/<task>.sh evaluate: s3prl's runner trains a head and scores the test split."""
    result = exp / "results.json"
    if not result.exists():
        cmd = ["bash", str(ROOT / "downstream_recipes" / f"{'er' if task in MUSIC_TASKS else task}.sh"), "evaluate",
               "--ckpt", str(ckpt), "--data", str(data), "--exp", str(exp), "--steps", str(steps),
               "--seed", str(seed), *extra.split()]
        with open(exp.parent / f"{exp.name}.log", "w") as log:
            subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(result.read_text())["value"]


# ---- statistics and the report ----

def t_interval(values):
    """(mean, half-width of the 95% t-interval over seeds; nan for one seed)."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


def summarise(rows, tasks):
    """{pair: {method: {α: {task: [mean, ci], 'avg': [mean, ci]}}}}; avg = per-seed mean over tasks."""
    table = {}
    for r in rows:
        table.setdefault(r["pair"], {}).setdefault(r["method"], {}).setdefault(r["alpha"], {}).setdefault(
            r["task"], {})[r["seed"]] = r["value"]
    out = {}
    for pair, by_method in table.items():
        for method, by_alpha in by_method.items():
            for alpha, by_task in by_alpha.items():
                cell = {task: list(t_interval(list(by_task[task].values()))) for task in tasks if task in by_task}
                seeds = set.intersection(*(set(by_task[t]) for t in cell))
                cell["avg"] = list(t_interval([sum(by_task[t][s] for t in cell) / len(cell) for s in sorted(seeds)]))
                out.setdefault(pair, {}).setdefault(method, {})[alpha] = cell
    return out


def fmt(cell):
    mean, ci = cell
    return f"{100 * mean:.1f}" + ("" if math.isnan(ci) else f" ± {100 * ci:.1f}")


def markdown(summary, tasks, alphas, header):
    lines = [header, ""]
    for pair, by_method in summary.items():
        lines += [f"### {pair}: probe accuracy (%), mean ± 95% CI over seeds", "",
                  "| method | α | " + " | ".join(tasks) + " | avg |", "|---|---|" + "---|" * (len(tasks) + 1)]
        for method in METHODS:
            for alpha in alphas:
                cell = by_method.get(method, {}).get(alpha)
                if cell:
                    lines.append(f"| {method} | {alpha:g} | " + " | ".join(fmt(cell[t]) if t in cell else "–" for t in tasks)
                                 + f" | {fmt(cell['avg'])} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--pair", action="append", required=True, metavar="A.pt:B.pt[:NAME]",
                   help="two encoders of one family and shape pre-trained apart (repeatable)")
    p.add_argument("--speech-corpus", metavar="DIR", help="`speechft corpus` folder (speech tasks, alignment audio)")
    p.add_argument("--music-corpus", required=True, metavar="DIR", help="`speechft corpus --music` folder")
    p.add_argument("--out", required=True, type=Path, help="results folder (results.csv, summary.json, results.md)")
    p.add_argument("--work", type=Path, help="merged models and feature caches (default OUT/work)")
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="weights of B (default 0,0.25,0.5,0.75,1)")
    p.add_argument("--tasks", default=",".join(SPEECH_TASKS + MUSIC_TASKS))
    p.add_argument("--seeds", type=int, default=3, help="probe seeds (default 3)")
    p.add_argument("--subset", type=float, default=0.8, help="fraction of train items a seed's probe sees")
    p.add_argument("--max-train", type=int, default=400, help="train items per task at most (default 400)")
    p.add_argument("--max-test", type=int, default=200, help="test items per task at most (default 200)")
    p.add_argument("--align-seconds", type=float, default=60.0,
                   help="seconds of speech, and of music, for alignment and REPAIR statistics (default 60)")
    p.add_argument("--recipe", action="append", default=[], metavar="TASK:PAIR:ALPHA[:METHOD]",
                   help="also run downstream_recipes/<task>.sh evaluate on the three merges of this point (or one)")
    p.add_argument("--eval-aligned-b", action="store_true",
                   help="also probe B aligned (α = 1 of the aligned methods) instead of reusing B's scores")
    p.add_argument("--recipe-steps", type=int, default=100)
    p.add_argument("--recipe-args", default=RECIPE_ARGS, help=f"more recipe options (default: {RECIPE_ARGS})")
    args = p.parse_args(argv)

    alphas = [float(a) for a in args.alphas.split(",")]
    tasks = [t for t in args.tasks.split(",") if t]
    if any(t in SPEECH_TASKS for t in tasks) and not args.speech_corpus:
        p.error("speech tasks need --speech-corpus")
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    audio = audio_folder(work, args.speech_corpus, args.music_corpus, args.align_seconds)
    data = {t: task_items(t, args.speech_corpus, args.music_corpus) for t in tasks}
    data = {t: {"train": cap(d["train"], args.max_train), "test": cap(d["test"], args.max_test)} for t, d in data.items()}
    say("tasks: " + ", ".join(f"{t} {len(d['train'])}/{len(d['test'])}" for t, d in data.items()))

    rows, models = [], {}
    for spec in args.pair:
        parts = spec.split(":")
        a, b = Path(parts[0]), Path(parts[1])
        name = parts[2] if len(parts) > 2 else f"{a.stem}+{b.stem}"
        models[name] = merges(name, a, b, alphas, audio, work)
        for (method, alpha), ckpt in models[name].items():
            if alpha == 1 and method != "linear" and not args.eval_aligned_b:
                # B aligned (and REPAIR, which changes nothing at α = 1) computes B's function: B's scores
                rows += [dict(r, method=method, eval="probe (= B)") for r in rows
                         if r["pair"] == name and r["method"] == "linear" and r["alpha"] == 1]
                continue
            digest = weights_digest(ckpt)
            for task in tasks:
                x = {s: pooled_features(ckpt, data[task][s], work / "features" / digest / f"{task}_{s}_{items_digest(data[task][s])}.npy")
                     for s in ("train", "test")}
                y = {s: [label for _, label in data[task][s]] for s in ("train", "test")}
                for seed in range(args.seeds):
                    rows.append({"pair": name, "method": method, "alpha": alpha, "task": task, "seed": seed, "eval": "probe",
                                 "value": probe(x["train"], y["train"], x["test"], y["test"], seed, args.subset)})
            say(f"{name} {method} α {alpha:g}: " + ", ".join(
                f"{r['task']} {r['value']:.3f}" for r in rows[-len(tasks) * args.seeds::args.seeds]))

    recipe_rows = []
    for spec in args.recipe:
        task, pair, alpha, *only = spec.split(":")
        root = Path(args.music_corpus) / task if task in MUSIC_TASKS else Path(args.speech_corpus) / task
        for method in only or METHODS:
            ckpt = models[pair][(method, float(alpha))]
            exp = work / "recipe" / pair / method / f"{task}_{alpha}"
            exp.parent.mkdir(parents=True, exist_ok=True)
            value = recipe_score(task, ckpt, root, exp, args.recipe_steps, 1337, args.recipe_args)
            recipe_rows.append({"pair": pair, "method": method, "alpha": float(alpha), "task": task, "seed": 1337,
                                "eval": f"recipe ({args.recipe_steps} steps)", "value": value})
            say(f"recipe {task} {pair} {method} α {alpha}: {value:.4f}")

    with open(args.out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + recipe_rows)
    summary = summarise(rows, tasks)
    (args.out / "summary.json").write_text(json.dumps(
        {"alphas": alphas, "tasks": tasks, "seeds": args.seeds, "subset": args.subset, "max_train": args.max_train,
         "max_test": args.max_test, "align_seconds": args.align_seconds, "pairs": args.pair,
         "probe": summary, "recipe": recipe_rows}, indent=1) + "\n")
    text = markdown(summary, tasks, alphas, f"θ = (1 − α)·A + α·B; {args.seeds} probe seeds, each on "
                                           f"{args.subset:.0%} of ≤ {args.max_train} train items; ≤ {args.max_test} test items.")
    if recipe_rows:
        text += "\n### downstream recipes (s3prl runner, one seed)\n\n| pair | task | α | method | value |\n|---|---|---|---|---|\n"
        text += "\n".join(f"| {r['pair']} | {r['task']} | {r['alpha']:g} | {r['method']} | {r['value']:.4f} |" for r in recipe_rows) + "\n"
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
