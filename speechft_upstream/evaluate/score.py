"""The SUPERB score: one number per encoder from per-task results and reference points.

For each task metric m with reference points FBANK f_m and state of the art t_m, a value s is
normalised to n_m = (s − f_m) / (t_m − f_m): 0 at FBANK, 1 at the state of the art, above 1
beyond it, below 0 under FBANK. References are given in the metric's own direction, so the
same formula serves error rates (PER, WER, EER, …: t < f, and a lower s gives a higher n) and
accuracies (t > f). A task with several metrics (SUPERB's SF: F1 and CER) scores the plain mean
of its metrics' n_m. The score is

    SUPERB_s = 1000 × mean over the encoder's tasks of the task's normalised score

which is what the SUPERB leaderboard computes (superbbenchmark/website-react,
frontend/src/overall_metrics.js: error rates become 100 − value, a linear map to the
[FBANK, SOTA] interval scaled by 1000, mean over a task's metrics, then mean over tasks).

Input rows (RESULTS.json, a JSON list): {"encoder", "task", "metric", "value", "split"}. Only
rows of one split are scored (``split``, default "test"). Task and metric names match the
references case-insensitively. Reference metrics may leave out ``fbank``; those take it from the
results of a baseline encoder (``baseline_encoder`` in the YAML, or the argument), e.g. an
FBANK baseline measured by the same benchmark.
"""

import json
import math
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

HERE = Path(__file__).resolve().parent
SUPERB_REFERENCES = HERE / "superb_references.yaml"
MINI_REFERENCES = HERE / "mini_superb_references.yaml"


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpeechFTError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def load_references(path):
    """{"name", "baseline_encoder", "tasks": {task: {metric: {"fbank": float|None, "sota": float}}}}."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpeechFTError(f"{path}: references file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise SpeechFTError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or not data["tasks"]:
        raise SpeechFTError(f"{path}: expected a mapping with a non-empty 'tasks' mapping (task -> metric -> {{fbank, sota}})")
    tasks = {}
    for task, metrics in data["tasks"].items():
        if not isinstance(metrics, dict) or not metrics:
            raise SpeechFTError(f"{path}: task {task!r} must map metric names to {{fbank, sota}}")
        tasks[str(task)] = {}
        for metric, points in metrics.items():
            where = f"{path}: {task}/{metric}"
            if not isinstance(points, dict) or "sota" not in points:
                raise SpeechFTError(f"{where}: expected {{fbank: NUMBER, sota: NUMBER}} (fbank may be left out)")
            unknown = set(points) - {"fbank", "sota"}
            if unknown:
                raise SpeechFTError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
            sota = _number(points["sota"], f"{where} sota")
            fbank = None if points.get("fbank") is None else _number(points["fbank"], f"{where} fbank")
            if fbank is not None and fbank == sota:
                raise SpeechFTError(f"{where}: fbank and sota are equal ({sota}); the score would divide by zero")
            tasks[str(task)][str(metric)] = {"fbank": fbank, "sota": sota}
    _check_unique(tasks, path, "task")
    for task, metrics in tasks.items():
        _check_unique(metrics, path, f"metric of task {task}")
    baseline = data.get("baseline_encoder")
    return {"name": str(data.get("name") or path.name), "baseline_encoder": None if baseline is None else str(baseline),
            "tasks": tasks, "path": str(path)}


def _check_unique(mapping, path, what):
    seen = {}
    for key in mapping:
        if key.lower() in seen:
            raise SpeechFTError(f"{path}: {what} {key!r} given twice (names are case-insensitive; also {seen[key.lower()]!r})")
        seen[key.lower()] = key


def load_results(path):
    """The rows of RESULTS.json, checked: a list of {encoder, task, metric, value[, split]}."""
    path = Path(path)
    if not path.is_file():
        raise SpeechFTError(f"{path}: results file not found")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SpeechFTError(f"{path}: not valid JSON ({err})") from None
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):
        rows = rows["rows"]
    if not isinstance(rows, list):
        raise SpeechFTError(f"{path}: expected a JSON list of rows {{encoder, task, metric, value, split}}")
    out = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i}"
        if not isinstance(row, dict):
            raise SpeechFTError(f"{where}: expected an object, got {type(row).__name__}")
        missing = [k for k in ("encoder", "task", "metric", "value") if k not in row]
        if missing:
            raise SpeechFTError(f"{where}: missing {', '.join(missing)}")
        out.append({"encoder": str(row["encoder"]), "task": str(row["task"]), "metric": str(row["metric"]),
                    "value": _number(row["value"], f"{where} value"),
                    "split": None if row.get("split") is None else str(row["split"])})
    return out


def compute(rows, references, split="test", baseline_encoder=None, tasks=None, source="results"):
    """Scores per encoder: {encoder: {"score", "tasks": {task: {"score", "metrics": {...}}}}}.

    ``rows`` as from load_results, ``references`` as from load_references. ``tasks`` restricts
    the score to those tasks (names as in the references). Every task and metric in the chosen
    rows must have reference points, and a task's every reference metric must be present.
    """
    ref_tasks = references["tasks"]
    task_names = {t.lower(): t for t in ref_tasks}
    baseline_encoder = baseline_encoder or references.get("baseline_encoder")
    ref_file = references.get("path", "references")

    if split is not None:
        splits = sorted({str(r["split"]) for r in rows})
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise SpeechFTError(f"{source}: no rows with split {split!r} (splits present: {', '.join(splits) or 'none'})")
    if tasks:
        wanted = set()
        for t in tasks:
            if t.lower() not in task_names:
                raise SpeechFTError(f"task {t!r} is not in {ref_file} (tasks there: {', '.join(ref_tasks)})")
            wanted.add(task_names[t.lower()])
    else:
        wanted = None

    # values[encoder][task][metric] = value, names in the references' spelling
    values = {}
    for r in rows:
        task = task_names.get(r["task"].lower())
        if task is None:
            raise SpeechFTError(
                f"{source}: task {r['task']!r} (encoder {r['encoder']!r}) has no reference points in {ref_file} "
                f"(tasks there: {', '.join(ref_tasks)})")
        if wanted is not None and task not in wanted:
            continue
        metric_names = {m.lower(): m for m in ref_tasks[task]}
        metric = metric_names.get(r["metric"].lower())
        if metric is None:
            raise SpeechFTError(
                f"{source}: metric {r['metric']!r} of task {task} (encoder {r['encoder']!r}) has no reference points "
                f"in {ref_file} (metrics there: {', '.join(ref_tasks[task])})")
        if metric.lower() == "mtwv" and r["value"] > 1:
            # TWV is at most 1 (qbe.sh writes it as a fraction, as the leaderboard does): a percent slipped in
            raise SpeechFTError(f"{source}: MTWV {r['value']} of encoder {r['encoder']!r} is above 1; MTWV is a "
                                "fraction (at most 1), not a percentage")
        slot = values.setdefault(r["encoder"], {}).setdefault(task, {})
        if metric in slot:
            raise SpeechFTError(f"{source}: two rows for encoder {r['encoder']!r}, task {task}, metric {metric}"
                                + (f", split {split}" if split is not None else ""))
        slot[metric] = r["value"]
    if not values:
        raise SpeechFTError(f"{source}: no rows left to score")

    def fbank_of(task, metric):
        fbank = ref_tasks[task][metric]["fbank"]
        if fbank is not None:
            return fbank
        if baseline_encoder is None:
            raise SpeechFTError(f"{ref_file}: {task}/{metric} has no fbank value and no baseline encoder is named "
                                "(baseline_encoder in the file, or --baseline-encoder)")
        measured = values.get(baseline_encoder, {}).get(task, {}).get(metric)
        if measured is None:
            raise SpeechFTError(f"{source}: no {task}/{metric} row for the baseline encoder {baseline_encoder!r}, "
                                f"which {ref_file} takes the FBANK point from")
        if measured == ref_tasks[task][metric]["sota"]:
            raise SpeechFTError(f"{source}: baseline encoder {baseline_encoder!r} already reaches the sota point on "
                                f"{task}/{metric} ({measured}); the score would divide by zero")
        return measured

    scores = {}
    for encoder, by_task in values.items():
        detail = {}
        for task, got in by_task.items():
            missing = [m for m in ref_tasks[task] if m not in got]
            if missing:
                raise SpeechFTError(
                    f"{source}: encoder {encoder!r}, task {task}: metric(s) {', '.join(missing)} missing "
                    f"(the task's score averages {', '.join(ref_tasks[task])})")
            metrics = {}
            for metric, value in got.items():
                fbank, sota = fbank_of(task, metric), ref_tasks[task][metric]["sota"]
                metrics[metric] = {"value": value, "fbank": fbank, "sota": sota,
                                   "normalised": (value - fbank) / (sota - fbank)}
            task_score = sum(m["normalised"] for m in metrics.values()) / len(metrics)
            detail[task] = {"normalised": task_score, "metrics": metrics}
        order = [t for t in ref_tasks if t in detail]
        scores[encoder] = {"score": 1000.0 * sum(detail[t]["normalised"] for t in order) / len(order),
                           "tasks": {t: detail[t] for t in order}}
    return scores


def describe(scores, references, split):
    """Lines to print: one score per encoder, then a note when encoders cover different tasks."""
    width = max(len(e) for e in scores)
    lines = [f"SUPERB score ({references['name']}; split {split}): 1000 × mean over tasks of "
             "(s − FBANK)/(SOTA − FBANK)"]
    for encoder, s in scores.items():
        lines.append(f"{encoder:<{width}}  {s['score']:9.2f}  ({len(s['tasks'])} tasks: {', '.join(s['tasks'])})")
    task_sets = {tuple(s["tasks"]) for s in scores.values()}
    if len(task_sets) > 1:
        lines.append("note: encoders were scored on different task sets; their scores are not comparable")
    return lines


def run(results, references=None, split="test", baseline_encoder=None, tasks=None, json_out=None):
    refs = load_references(references or SUPERB_REFERENCES)
    rows = load_results(results)
    scores = compute(rows, refs, split=split, baseline_encoder=baseline_encoder, tasks=tasks, source=str(results))
    if json_out:
        out = {"references": refs["name"], "references_file": refs["path"], "split": split,
               "scores": {e: s["score"] for e, s in scores.items()}, "detail": scores}
        from speechft_upstream.checkpoints import atomic

        atomic.write_json_atomic(out, json_out, indent=2)
    return scores, refs


def add_parser(sub):
    p = sub.add_parser(
        "score", help="SUPERB score per encoder from a results table and reference points",
        description="SUPERB_s = 1000 × mean over tasks of (s − FBANK)/(SOTA − FBANK); a task with several "
                    "metrics (SF: F1, CER) averages its metrics' normalised values first. Error rates use the "
                    "same formula: their references are in the metric's own direction (SOTA < FBANK).")
    p.add_argument("results", metavar="RESULTS.json", help="JSON list of {encoder, task, metric, value, split}")
    p.add_argument("--references", metavar="REFS.yaml",
                   help=f"reference points (default: the SUPERB leaderboard's, {SUPERB_REFERENCES.name}; "
                        f"the mini benchmark's: {MINI_REFERENCES.name})")
    p.add_argument("--split", default="test", help="score rows of this split only (default: test)")
    p.add_argument("--baseline-encoder", metavar="NAME",
                   help="take missing FBANK points from this encoder's rows (overrides baseline_encoder in REFS)")
    p.add_argument("--tasks", metavar="T[,T...]", help="score only these tasks")
    p.add_argument("--json", metavar="OUT.json", dest="json_out", help="also write the scores (and per-task detail)")
    p.set_defaults(func=_cli)


def _cli(args):
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    scores, refs = run(args.results, args.references, split=args.split, baseline_encoder=args.baseline_encoder,
                       tasks=tasks, json_out=args.json_out)
    print("\n".join(describe(scores, refs, args.split)))
