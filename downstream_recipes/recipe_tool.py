"""Helpers behind downstream_recipes/common.sh (not a user command).

    recipe_tool.py overrides ...        the runner's -o string for a recipe run
    recipe_tool.py pick CONFIG EXP      the runner checkpoint to evaluate / extract
    recipe_tool.py result ...           parse the test metric from a runner log, write results.json
    recipe_tool.py folds --output OUT RESULTS...
                                        one results.json from per-fold ones (ER's five folds):
                                        the mean, and each fold's value
    recipe_tool.py runner [--cache-dir DIR] -- ARGS
                                        s3prl's unmodified runner (torchrun-aware), with the
                                        voxceleb1 (SID) file-list and sv_voxceleb1 (ASV) wav-length
                                        caches moved out of s3prl's installed package into the
                                        experiment. The startup hook keys those caches by data set
                                        (s3prl keys them by split / a constant) and supplies the ctc
                                        corpora (PR, SF) and catalyst (KS), so the plain runner has
                                        these fixes too.
"""

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

RECIPES = Path(__file__).resolve().parent


def fail(message):
    print(f"speechft: error: {message}", file=sys.stderr)
    sys.exit(1)


def _path_value(template, data):
    """'@DATA/x|@RECIPES/y': the first alternative that exists (the last one otherwise)."""
    options = [t.replace("@DATA", str(data)).replace("@RECIPES", str(RECIPES)) for t in template.split("|")]
    for option in options:
        if os.path.exists(option):
            return option
    return options[-1]


def overrides(args):
    import yaml

    config = yaml.safe_load(Path(args.config).read_text())
    items = []
    for spec in args.data_path:
        key, template = spec.split("=", 1)
        value = os.path.abspath(_path_value(template, args.data))
        if ",," in value or "=" in value or "'" in value:
            fail(f"{value}: s3prl's -o cannot carry a path with ',,', '=' or a quote; use another folder name")
        items.append(f"{key}={value!r}")
    runner = config["runner"]
    if args.steps is not None:
        if args.steps <= 0:
            fail(f"--steps must be a positive integer, got {args.steps}")
        items.append(f"config.runner.total_steps={args.steps}")
        for key in ("log_step", "eval_step", "save_step"):
            if runner[key] > args.steps:
                items.append(f"config.runner.{key}={args.steps}")
    if args.batch_size is not None:
        if args.batch_size <= 0:
            fail(f"--batch-size must be a positive integer, got {args.batch_size}")
        items += [f"{key}={args.batch_size}" for key in args.batch_key]
    if args.workers is not None:
        items += [f"{key}={args.workers}" for key in args.workers_key]
    if args.lr is not None:
        items.append(f"config.optimizer.lr={args.lr}")
    if args.scheduler:
        items.append(f"config.scheduler={{'name': {args.scheduler!r}}}")
    items += [o for o in args.extra if o]
    print(",,".join(items))


def _step(path):
    match = re.search(r"states-(\d+)\.ckpt$", str(path))
    return int(match.group(1)) if match else -1


def pick(args):
    """dev-best checkpoint of the run (name from the dev split), else the last states-*.ckpt."""
    exp = Path(args.exp)
    best = [exp / f"{args.dev_split}-best.ckpt"] if args.dev_split else []
    best += sorted(exp.glob("*-best.ckpt"))
    best += sorted(exp.glob("best-states-*.ckpt"))  # diarization's name for its dev-best checkpoint
    for path in best:
        if path.is_file():
            print(path)
            return
    states = sorted(exp.glob("states-*.ckpt"), key=_step)
    if not states:
        fail(f"{exp}: the run left no checkpoint (no *-best.ckpt, no states-*.ckpt)")
    print(states[-1])


def _metric(text, log, line, split, metric):
    """The last value the runner printed as '<line>: VALUE' (line: '{split} {metric}' by default)."""
    prefix = line.format(split=split, metric=metric)
    found = re.findall(rf"^{re.escape(prefix)}: ([-+0-9.eE]+|nan|inf)\s*$", text, re.M)
    if not found:
        fail(f"{log}: no '{prefix}: VALUE' line from the runner")
    return float(found[-1])


def result(args):
    scored, others = {}, {}
    if args.scores:  # the task scored the runner's output itself: {"value", "metrics"}
        scored = json.loads(Path(args.scores).read_text())
        value = scored["value"]
    else:
        text = Path(args.log).read_text(errors="replace")
        value = _metric(text, args.log, args.line, args.split, args.metric)
        others = {m: _metric(text, args.log, args.line, args.split, m) for m in args.also_metric}
    from speechft_upstream.checkpoints import files

    states = files.load(args.runner_ckpt, allowed=files.RUNNER_ALLOWED)
    results = {
        "task": args.task,
        "metric": args.metric,
        "value": value,
        "split": args.split,
        "encoder_ckpt": os.path.abspath(args.encoder_ckpt) if args.encoder_ckpt else None,
        "upstream": args.upstream,
        "steps": int(states["Config"]["runner"]["total_steps"]),
        "checkpoint_step": int(states["Step"]),
        "runner_ckpt": os.path.abspath(args.runner_ckpt),
        "higher_is_better": args.higher_is_better,
    }
    if scored.get("metrics"):
        results["metrics"] = scored["metrics"]
    if others:  # a task with several metrics (SF): all of them, the first is "value"
        results["metrics"] = {args.metric: value, **others}
    for item in args.extra:
        key, extra = item.split("=", 1)
        results[key] = extra
    out = Path(args.output)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps(results))


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
        for key in ("task", "metric", "split", "encoder_ckpt", "upstream"):
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


def runner(args):
    argv = list(args.runner_args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if args.cache_dir:
        import s3prl.downstream.voxceleb1.dataset as voxceleb1

        voxceleb1.CACHE_PATH = os.path.join(args.cache_dir, "voxceleb1", "")
        from speechft_upstream.compat import sv_voxceleb1

        sv_voxceleb1.CACHE_DIR = os.path.join(args.cache_dir, "sv_voxceleb1")
    if os.environ.get("LOCAL_RANK") is not None:
        from speechft_upstream.upstream import launch

        return launch.main(argv)
    import runpy

    sys.argv = ["run_downstream.py", *argv]
    runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="recipe_tool.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overrides")
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--data-path", action="append", default=[], metavar="KEY=@DATA/...")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--batch-key", action="append", default=[])
    p.add_argument("--workers", type=int)
    p.add_argument("--workers-key", action="append", default=[])
    p.add_argument("--lr")
    p.add_argument("--scheduler")
    p.add_argument("--extra", action="append", default=[])
    p.set_defaults(func=overrides)
    p = sub.add_parser("pick")
    p.add_argument("exp")
    p.add_argument("--dev-split", default="dev")
    p.set_defaults(func=pick)
    p = sub.add_parser("result")
    for name in ("log", "task", "metric", "split", "upstream", "runner_ckpt", "output"):
        p.add_argument(f"--{name.replace('_', '-')}", required=True)
    p.add_argument("--encoder-ckpt")
    p.add_argument("--higher-is-better", type=lambda s: s == "true", default=True)
    p.add_argument("--scores", help="JSON {value, metrics} written by the task's own scoring (SD)")
    p.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--also-metric", action="append", default=[], metavar="NAME",
                   help="another metric of the same log, kept under 'metrics' with the main one")
    p.add_argument("--line", default="{split} {metric}",
                   help="what the runner prints before ': VALUE' (default '{split} {metric}')")
    p.set_defaults(func=result)
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
    p = sub.add_parser("runner")
    p.add_argument("--cache-dir")
    p.add_argument("runner_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=runner)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
