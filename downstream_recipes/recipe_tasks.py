"""Task-specific steps of the recipes, for recipe_tool.py: SD's data check and DER scoring, QbE's
DTW layer sweep with MTWV, ER's mean over the five folds (and over seeds). Shared with
recipe_tool: ``fail``."""

import argparse
import json
import math
import os
import sys
from pathlib import Path


def fail(message):
    print(f"speechft: error: {message}", file=sys.stderr)
    sys.exit(1)


def sd_check(args):
    """SD: every wav.scp file exists and every segment's recording is listed (before the runner)."""
    data = Path(args.data)
    layout = "SD data layout: downstream_recipes/README.md"
    for split in ("train", "dev", "test"):
        folder = data / split
        wavs = {}
        for number, line in enumerate((folder / "wav.scp").read_text().splitlines(), 1):
            fields = line.split(None, 1)
            if len(fields) != 2:
                fail(f"{folder / 'wav.scp'}:{number}: expected '<recording> <wav path>' ({layout})")
            rec, path = fields[0], fields[1].strip()
            wavs[rec] = path
            if not path.endswith("|") and path != "-" and not os.path.isfile(path):
                fail(f"{folder / 'wav.scp'}:{number}: {path}: no such audio file (relative paths are read from "
                     f"the working directory; {layout})")
        durations = {line.split()[0] for line in (folder / "reco2dur").read_text().splitlines() if line.strip()}
        missing = sorted(set(wavs) - durations)
        if missing:
            fail(f"{folder / 'reco2dur'}: no line for recording {missing[0]} of wav.scp ({layout})")
        for number, line in enumerate((folder / "segments").read_text().splitlines(), 1):
            fields = line.split()
            if len(fields) != 4 or fields[1] not in wavs:
                fail(f"{folder / 'segments'}:{number}: expected '<utt> <recording of wav.scp> <start> <end>' ({layout})")


def sd_score(args):
    """SD: DER (percent) of the test predictions, score.sh's settings swept, the lowest reported."""
    from speechft_upstream.errors import SpeechFTError
    from speechft_upstream.evaluate import der

    exp = Path(args.exp)
    try:
        frame_shift = int((exp / "frame_shift").read_text().split()[0])
        scored = der.score_predictions(exp / "scoring" / "predictions", args.reference, frame_shift, exp / "scoring")
    except (OSError, ValueError, IndexError) as err:
        fail(f"{exp / 'frame_shift'}: the diarization expert's label frame shift is unreadable ({err})")
    except SpeechFTError as err:
        fail(str(err))
    best = scored["best"]
    metrics = {"der": round(100 * best["der"], 4), "missed": round(100 * best["missed"], 4),
               "false_alarm": round(100 * best["false_alarm"], 4), "confusion": round(100 * best["confusion"], 4),
               "threshold": best["threshold"], "median": best["median"], "frame_shift": frame_shift,
               "sweep": {f"th{r['threshold']}_med{r['median']}": round(100 * r["der"], 4) for r in scored["settings"]}}
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"value": metrics["der"], "metrics": metrics}, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"[sd.sh] DER {metrics['der']:.2f}% (threshold {best['threshold']}, median {best['median']}; "
          f"RTTM {best['rttm']})", file=sys.stderr)


QBE_LISTS = ("language_key_utterances.lst", "language_key_dev.lst", "language_key_eval.lst")
QBE_LAYOUT = ("QbE data layout: scoring/language_key_{utterances,dev,eval}.lst, "
              "scoring/groundtruth_quesst14_{dev,eval}/, audio; downstream_recipes/README.md")


def _qbe_check(data):
    """Everything quesst14_dtw and the scorer read, before the first run: one line per problem."""
    import re

    from speechft_upstream.errors import SpeechFTError
    from speechft_upstream.evaluate import mtwv

    scoring = data / "scoring"
    for name in QBE_LISTS:
        lst = scoring / name
        if not lst.is_file():
            fail(f"{data}: missing scoring/{name} ({QBE_LAYOUT})")
        english = 0
        for number, line in enumerate(lst.read_text().splitlines(), 1):
            fields = line.split()
            if len(fields) != 2:
                fail(f"{lst}:{number}: expected '<path> <language>' ({QBE_LAYOUT})")
            if fields[1] != "nnenglish":
                continue
            english += 1
            audio = data / re.sub(r"^.*?/", "", fields[0])  # what s3prl's dataset opens
            if not audio.is_file():
                fail(f"{audio}: missing (listed in scoring/{name}; {QBE_LAYOUT})")
        if not english:
            fail(f"{lst}: no 'nnenglish' entries (s3prl's quesst14_dtw keeps English only)")
    truths = {}
    for split in ("dev", "eval"):
        folder = scoring / f"groundtruth_quesst14_{split}"
        if not folder.is_dir():
            fail(f"{data}: missing scoring/groundtruth_quesst14_{split}/ ({QBE_LAYOUT})")
        try:
            truths[split] = mtwv.read_groundtruth(folder)
        except SpeechFTError as err:
            fail(str(err))
    return truths


def _qbe_layers(upstream, ckpt, device):
    """How many hidden states the upstream gives (SUPERB runs DTW on each)."""
    import torch
    import s3prl.hub as hub

    model = getattr(hub, upstream)(ckpt=ckpt).to(device).eval()
    with torch.no_grad():
        return len(model([torch.randn(16000, device=device)])["hidden_states"])


def qbe(args):
    """SUPERB QbE: DTW on each layer on dev, the best layer's MTWV on eval -> results.json."""
    import contextlib

    import torch

    from speechft_upstream.errors import SpeechFTError
    from speechft_upstream.evaluate import mtwv

    data, exp = Path(args.data).resolve(), Path(args.exp).resolve()
    if not data.is_dir():
        fail(f"{data}: no such data folder")
    if args.ckpt and not Path(args.ckpt).is_file():
        fail(f"{args.ckpt}: no such checkpoint file")
    ckpt = str(Path(args.ckpt).resolve()) if args.ckpt else None
    if ",," in str(data) or "=" in str(data) or "'" in str(data):
        fail(f"{data}: s3prl's -o cannot carry a path with ',,', '=' or a quote; use another folder name")
    truths = _qbe_check(data)
    if exp.exists() and any(exp.glob("*_layer_*/benchmark.stdlist.xml")):
        fail(f"{exp}: already holds QbE runs; use a new --exp folder")
    exp.mkdir(parents=True, exist_ok=True)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    overrides = [f"config.downstream_expert.datarc.dataset_root='{data}'",
                 f"config.downstream_expert.max_workers={args.workers}",
                 f"config.downstream_expert.datarc.num_workers={args.workers}"]
    if args.dist_method:
        overrides.append(f"config.downstream_expert.dtwrc.dist_method='{args.dist_method}'")
    overrides += [o for o in args.override if o]
    if args.layer == "all":
        layers = list(range(_qbe_layers(args.upstream, ckpt, device)))
    else:
        try:
            layers = [int(args.layer)]
        except ValueError:
            fail(f"--layer must be 'all' or a layer index, got {args.layer!r}")

    def run(split, layer):
        folder = exp / f"{split}_layer_{layer}"
        argv = ["-m", "evaluate", "-t", "dev" if split == "dev" else "test", "-u", args.upstream, "-l", str(layer),
                "-d", "quesst14_dtw", "-c", args.config, "-p", str(folder), "--device", device,
                "--seed", str(args.seed), "-o", ",,".join(overrides)]
        if ckpt:
            argv += ["-k", ckpt]
        print(f"[qbe.sh] {split}: layer {layer} (log {folder}.log)", file=sys.stderr, flush=True)
        import runpy

        with open(f"{folder}.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            sys.argv = ["run_downstream.py", *argv]
            runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
        truth, documents, _ = truths["dev" if split == "dev" else "eval"]
        scores, yes = mtwv.read_stdlist(folder / "benchmark.stdlist.xml")
        out = mtwv.mtwv(scores, truth, documents)
        out["atwv"] = mtwv.atwv(yes, truth, documents)
        return out

    try:
        dev = {layer: run("dev", layer) for layer in layers}
        best = max(layers, key=lambda layer: (dev[layer]["mtwv"], -layer))  # ties: the lower layer
        test = run("test", best)
    except SpeechFTError as err:
        fail(str(err))
    results = {
        "task": "qbe", "metric": "mtwv", "value": round(test["mtwv"], 6), "split": "test",
        "encoder_ckpt": ckpt, "upstream": args.upstream, "layer": best, "higher_is_better": True,
        "metrics": {"mtwv": round(test["mtwv"], 6), "atwv": round(test["atwv"], 6),
                    # null: nothing detected is best (TWV 0); JSON has no infinity
                    "threshold": test["threshold"] if math.isfinite(test["threshold"]) else None, "layer": best, "dev_mtwv": round(dev[best]["mtwv"], 6),
                    "dev_mtwv_by_layer": {str(k): round(v["mtwv"], 6) for k, v in dev.items()},
                    "queries": test["queries"], "trials": test["trials"],
                    "constants": {"p_target": mtwv.P_TARGET, "c_miss": mtwv.C_MISS, "c_fa": mtwv.C_FA}},
        "stdlist": str(exp / f"test_layer_{best}" / "benchmark.stdlist.xml"),
    }
    out = exp / "results.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"[qbe.sh] test (eval queries) mtwv = {results['value']} (layer {best}, best on dev) -> {out}",
          file=sys.stderr)
    return 0



def folds(args):
    """SUPERB's ER score: the mean test accuracy of the folds; each fold's value is kept."""
    import math

    rows = []
    for path in args.results:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            fail(f"{path}: no fold result ({err})")
    first = rows[0]
    for path, row in zip(args.results, rows):
        for key in ("task", "metric", "split", "encoder_ckpt", "upstream", "seed"):
            if row.get(key) != first.get(key):
                fail(f"{path}: {key} {row.get(key)!r} differs from {args.results[0]}'s {first.get(key)!r}")
        if not isinstance(row.get("value"), float) or not math.isfinite(row["value"]):
            fail(f"{path}: value {row.get('value')!r} is not a finite number")
    results = {k: v for k, v in first.items() if k not in ("runner_ckpt", "checkpoint_step", "fold")}
    results["value"] = sum(row["value"] for row in rows) / len(rows)
    results["fold"] = "mean"
    results["folds"] = {row.get("fold", f"fold{i + 1}"): row["value"] for i, row in enumerate(rows)}
    results["fold_results"] = [os.path.abspath(p) for p in args.results]
    from speechft_upstream.checkpoints.files import write_json_atomic

    write_json_atomic(results, args.output, indent=2)
    print(json.dumps(results))


def fold_seeds(args):
    """ER with --seeds: the mean over seeds of each seed's fold mean (``folds``' outputs, one per
    seed); each seed's value, each fold's mean over seeds and every (seed, fold) value are kept."""
    rows = []
    for path in args.results:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            fail(f"{path}: no per-seed ER result ({err})")
    first = rows[0]
    for path, row in zip(args.results, rows):
        for key in ("task", "metric", "split", "encoder_ckpt", "upstream"):
            if row.get(key) != first.get(key):
                fail(f"{path}: {key} {row.get(key)!r} differs from {args.results[0]}'s {first.get(key)!r}")
        if row.get("seed") is None or not isinstance(row.get("folds"), dict):
            fail(f"{path}: not one seed's fold mean (no 'seed' or 'folds')")
        if sorted(row["folds"]) != sorted(first["folds"]):
            fail(f"{path}: folds {sorted(row['folds'])} differ from {args.results[0]}'s {sorted(first['folds'])}")
    seeds = [str(row["seed"]) for row in rows]
    if len(set(seeds)) != len(seeds):
        fail(f"seed {next(s for s in seeds if seeds.count(s) > 1)} is given twice")
    results = {k: v for k, v in first.items() if k not in ("seed", "fold_results", "early_stopping")}
    results["value"] = sum(row["value"] for row in rows) / len(rows)
    results["seeds"] = dict(zip(seeds, (row["value"] for row in rows)))
    results["folds"] = {f: sum(row["folds"][f] for row in rows) / len(rows) for f in first["folds"]}
    results["seed_folds"] = {s: row["folds"] for s, row in zip(seeds, rows)}
    results["seed_results"] = [os.path.abspath(p) for p in args.results]
    from speechft_upstream.checkpoints.files import write_json_atomic

    write_json_atomic(results, args.output, indent=2)
    print(json.dumps(results))


def add_parsers(sub):
    p = sub.add_parser("sd-check")
    p.add_argument("data")
    p.set_defaults(func=sd_check)
    p = sub.add_parser("sd-score")
    p.add_argument("--exp", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--output", required=True)
    p.set_defaults(func=sd_score)
    p = sub.add_parser("qbe", prog="qbe.sh evaluate",
                       description="SUPERB QbE through s3prl's quesst14_dtw: DTW on every hidden layer (or --layer) "
                                   "for the dev queries, the best layer's MTWV for the eval queries -> EXP/results.json. "
                                   "There is no finetune mode: QbE has no trainable head.")
    p.add_argument("--config", required=True, help=argparse.SUPPRESS)
    p.add_argument("--upstream", default="speechft_hubert", help="s3prl upstream (default speechft_hubert)")
    p.add_argument("--ckpt", help="encoder checkpoint (-k)")
    p.add_argument("--data", required=True, help="QUESST 2014 root (layout: downstream_recipes/README.md)")
    p.add_argument("--exp", required=True, help="experiment folder: <split>_layer_<n>/ per run, results.json")
    p.add_argument("--layer", default="all", help="'all' (SUPERB: best on dev) or one layer index, e.g. -1")
    p.add_argument("--workers", type=int, default=2, help="DTW processes and data loader workers (default 2)")
    p.add_argument("--dist-method", help="DTW frame distance (default the config's cosine_exp)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("-o", "--override", action="append", default=[], help="more s3prl overrides, joined with ',,'")
    p.set_defaults(func=qbe)
    p = sub.add_parser("folds")
    p.add_argument("--output", required=True)
    p.add_argument("results", nargs="+")
    p.set_defaults(func=folds)
    p = sub.add_parser("fold-seeds")
    p.add_argument("--output", required=True)
    p.add_argument("results", nargs="+")
    p.set_defaults(func=fold_seeds)
