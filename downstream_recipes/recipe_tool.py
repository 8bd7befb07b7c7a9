"""Helpers behind downstream_recipes/common.sh (not a user command).

    recipe_tool.py overrides ...        the runner's -o string for a recipe run
    recipe_tool.py pick CONFIG EXP      the runner checkpoint to evaluate / extract
    recipe_tool.py result ...           parse the test metric from runner logs, write results.json
                                        (and items.json / dev_items.json) per run
    recipe_tool.py folds --output OUT RESULTS...
                                        one results.json from per-fold ones (ER's five folds):
                                        the mean, and each fold's value
    recipe_tool.py items EXP ...        per-item outcomes of a split (s3prl's prediction files)
                                        -> items.json, for the paired tests
    recipe_tool.py runner [--cache-dir DIR] -- [--log FILE] ARGS [--next [--log FILE] ARGS ...]
                                        (an argument @pick:EXP:DEV is the checkpoint `pick`
                                        finds once the runs before it are done)
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


def picked(exp, dev_split="dev"):
    """dev-best checkpoint of the run (name from the dev split), else the last states-*.ckpt."""
    exp = Path(exp)
    best = [exp / f"{dev_split}-best.ckpt"] if dev_split else []
    best += sorted(exp.glob("*-best.ckpt"))
    best += sorted(exp.glob("best-states-*.ckpt"))  # diarization's name for its dev-best checkpoint
    for path in best:
        if path.is_file():
            return path
    states = sorted(exp.glob("states-*.ckpt"), key=_step)
    if not states:
        fail(f"{exp}: the run left no checkpoint (no *-best.ckpt, no states-*.ckpt)")
    return states[-1]


def pick(args):
    print(picked(args.exp, args.dev_split))


PICK = "@pick:"  # runner argument "@pick:EXP:DEV_SPLIT": that run's checkpoint, found when its turn comes


def _resolve(arg):
    if arg.startswith(PICK):
        exp, dev_split = arg[len(PICK):].rsplit(":", 1)
        return str(picked(exp, dev_split))
    return arg


def _metric(text, log, line, split, metric):
    """The last value the runner printed as '<line>: VALUE' (line: '{split} {metric}' by default)."""
    prefix = line.format(split=split, metric=metric)
    found = re.findall(rf"^{re.escape(prefix)}: ([-+0-9.eE]+|nan|inf)\s*$", text, re.M)
    if not found:
        fail(f"{log}: no '{prefix}: VALUE' line from the runner")
    return float(found[-1])


def result(args):
    """results.json per run (several runs in one call: one torch import), with the runs' items."""
    n = len(args.log)
    if not (len(args.runner_ckpt) == len(args.output) == n) or (args.seed and len(args.seed) != n):
        fail("result: give --log, --runner-ckpt, --output (and --seed) once per run")
    from speechft_upstream.checkpoints import files

    if args.scores and len(args.scores) != n:
        fail("result: give --scores once per run")
    for i, (log, runner_ckpt, output) in enumerate(zip(args.log, args.runner_ckpt, args.output)):
        scored, others = {}, {}
        if args.scores:  # the task scored the runner's output itself (SD): {"value", "metrics"}
            scored = json.loads(Path(args.scores[i]).read_text())
            value = scored["value"]
        else:
            text = Path(log).read_text(errors="replace")
            value = _metric(text, log, args.line, args.split, args.metric)
            others = {m: _metric(text, log, args.line, args.split, m) for m in args.also_metric}
        states = files.load(runner_ckpt, allowed=files.RUNNER_ALLOWED)
        results = {
            "task": args.task,
            "metric": args.metric,
            "value": value,
            "split": args.split,
            "encoder_ckpt": os.path.abspath(args.encoder_ckpt) if args.encoder_ckpt else None,
            "upstream": args.upstream,
            "steps": int(states["Config"]["runner"]["total_steps"]),
            "checkpoint_step": int(states["Step"]),
            "runner_ckpt": os.path.abspath(runner_ckpt),
            "higher_is_better": args.higher_is_better,
        }
        if scored.get("metrics"):
            results["metrics"] = scored["metrics"]
        if others:  # a task with several metrics (SF): all of them, the first is "value"
            results["metrics"] = {args.metric: value, **others}
        stopping = Path(runner_ckpt).parent / "early_stopping.json"
        if stopping.is_file():  # written by speechft's early stopping (compat/early_stop.py)
            results["early_stopping"] = json.loads(stopping.read_text())
        if args.seed:
            results["seed"] = args.seed[i]
        for item in args.extra:
            key, extra = item.split("=", 1)
            results[key] = extra
        files.write_json_atomic(results, output, indent=2)
        exp = Path(output).parent
        # items measure the one metric the runner prints; a task scored by other means (SD) or with
        # several metrics (SF: F1 and CER over the same hyp/ref files) has no such items
        per_item = not (args.scores or args.also_metric)
        if args.items and per_item:  # the test split's items must give the value the runner printed
            _write_items(exp, args.split, exp / "items.json", check=results["value"])
        if args.dev_items and per_item:
            _write_items(exp, args.dev_items, exp / "dev_items.json")
        print(json.dumps(results))


def _write_items(exp, split, output, check=None):
    from speechft_upstream.checkpoints import files
    from speechft_upstream.errors import SpeechFTError
    from speechft_upstream.evaluate import items as items_module

    if items_module.find(exp, split) is None:  # a downstream that logs no items
        print(f"[recipe_tool] {exp}: no per-item predictions of {split}; no {output}", file=sys.stderr)
        return
    try:
        record = items_module.collect(exp, split)
    except SpeechFTError as err:
        fail(str(err))
    record["value"] = items_module.value(record)
    if check is not None and abs(record["value"] - check) > 1e-6 * max(1.0, abs(check)):
        fail(f"{exp}: the {split} items give {record['value']}, the runner printed {check}")
    files.write_json_atomic(record, output, indent=1)


def items(args):
    check = json.loads(Path(args.check).read_text())["value"] if args.check else None
    _write_items(args.exp, args.split, args.output, check)
    return 0


class _Tee:
    """Writes to the console stream and to one run's log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def _segments(argv):
    """Runner argument lists separated by --next; each may start with --log FILE."""
    runs, current = [], []
    for arg in argv + ["--next"]:
        if arg == "--next":
            log = None
            if len(current) >= 2 and current[0] == "--log":
                log, current = current[1], current[2:]
            if current:
                runs.append((log, current))
            current = []
        else:
            current.append(arg)
    return runs


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
    runs = _segments(argv)
    if os.environ.get("LOCAL_RANK") is not None:
        if len(runs) != 1 or runs[0][0]:
            fail("multi-process runs take one runner argument list and no --log")
        from speechft_upstream.upstream import launch

        return launch.main(runs[0][1])
    import runpy

    from speechft_upstream.compat import timing

    # Several runs (e.g. one per seed) in one process: the imports (about 5 s of CPU here, most
    # of a short run) are paid once. s3prl's main seeds random, numpy and torch itself each time.
    for log, run_args in runs:
        sys.argv = ["run_downstream.py", *map(_resolve, run_args)]
        timing.mark_run_start()
        handle = open(log, "w", encoding="utf-8", errors="replace") if log else None
        saved = sys.stdout, sys.stderr
        if handle:
            sys.stdout, sys.stderr = _Tee(sys.stdout, handle), _Tee(sys.stderr, handle)
        try:
            runpy.run_module("s3prl.run_downstream", run_name="__main__", alter_sys=True)
        finally:
            sys.stdout, sys.stderr = saved
            if handle:
                handle.close()
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
    for name in ("task", "metric", "split", "upstream"):
        p.add_argument(f"--{name}", required=True)
    for name in ("log", "runner_ckpt", "output"):  # once per run
        p.add_argument(f"--{name.replace('_', '-')}", action="append", required=True)
    p.add_argument("--seed", action="append", default=[])
    p.add_argument("--items", action="store_true", help="also OUTPUT's folder/items.json of the split")
    p.add_argument("--dev-items", metavar="SPLIT", help="also OUTPUT's folder/dev_items.json of SPLIT")
    p.add_argument("--encoder-ckpt")
    p.add_argument("--higher-is-better", type=lambda s: s == "true", default=True)
    p.add_argument("--scores", action="append", default=[], help="JSON {value, metrics} written by the task's own scoring (SD), once per run")
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
    p = sub.add_parser("items")
    p.add_argument("exp")
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True)
    p.add_argument("--check", metavar="RESULTS_JSON", help="fail unless the items give results.json's value")
    p.set_defaults(func=items)
    p = sub.add_parser("runner")
    p.add_argument("--cache-dir")
    p.add_argument("runner_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=runner)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
