"""Helpers behind downstream_recipes/common.sh (not a user command).

    recipe_tool.py overrides ...        the runner's -o string for a recipe run
    recipe_tool.py pick CONFIG EXP      the runner checkpoint to evaluate / extract
    recipe_tool.py result ...           parse the test metric from runner logs, write results.json
                                        (and items.json / dev_items.json) per run
    recipe_tool.py folds --output OUT RESULTS...
                                        one results.json from per-fold ones (ER's five folds):
                                        the mean, and each fold's value
    recipe_tool.py fold-seeds --output OUT RESULTS...
                                        ER with --seeds: one results.json from the per-seed fold
                                        means: their mean, each seed's and each fold's value
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
import os
import re
import sys
from pathlib import Path

import recipe_tasks  # the script's folder is on sys.path: the task-specific steps
from recipe_tasks import fail

RECIPES = Path(__file__).resolve().parent


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
        if not self.log.closed:  # a logging handler made during a run may outlive its log file
            self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        if not self.log.closed:
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
    recipe_tasks.add_parsers(sub)
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
