"""ER in the benchmark: SUPERB's ER is the mean of five leave-one-session-out folds on IEMOCAP.

The mini corpus's ER folder holds one IEMOCAP-style session, so the benchmark runs fold 1 there
(`er.sh evaluate --fold fold1`, EXP/seed<S>/ as every other task). On a data folder with all
five sessions' meta data (real IEMOCAP, --data-root) it runs `er.sh evaluate` without --fold:
EXP/foldN/seed<S>/ per fold and seed, EXP/seed<S>/results.json that seed's fold mean. A seed's
record here is then: test, that fold mean; dev, the mean over folds of each fold's dev-best
value; steps and checkpoint step per fold; and one items file per seed (and one of dev items)
holding every fold's items, ids prefixed by their fold. The folds test disjoint sessions, so
the paired tests over those items stay paired item by item.
"""

import json
from pathlib import Path

from speechft_upstream.benchmark.stage import say
from speechft_upstream.benchmark.task_runs import read_run
from speechft_upstream.errors import SpeechFTError

FOLDS = tuple(f"fold{n}" for n in range(1, 6))
ITEM_FILES = ("items", "dev_items")
_NOTED = set()


def fold_files(fold):
    """The meta data er.sh needs for ``fold`` (its fold_files)."""
    session = f"meta_data/Session{fold[len('fold'):]}"
    return (f"{session}/train_meta_data.json", f"{session}/test_meta_data.json")


def folds_of(data):
    """The folds the benchmark runs on an ER data folder: all five when every session's meta data
    is there, else fold 1 (the mini corpus's one session)."""
    data = Path(data)
    complete = [fold for fold in FOLDS if all((data / name).exists() for name in fold_files(fold))]
    if len(complete) == len(FOLDS):
        return list(FOLDS)
    if len(complete) > 1 and str(data) not in _NOTED:  # not the mini corpus: say why one fold only
        _NOTED.add(str(data))
        missing = [name for fold in FOLDS for name in fold_files(fold) if not (data / name).exists()]
        say(f"note: {data}: no {missing[0]}; ER runs fold 1 only (all five folds need every session's meta data)")
    return ["fold1"]


def _timing_sum(timings):
    """The folds' runner timings of one mode added up (None where no fold wrote one)."""
    timings = [t for t in timings if t]
    if not timings:
        return None
    out = dict(timings[0])
    for key, value in out.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values = [t.get(key) for t in timings]
            out[key] = None if None in values else round(sum(values), 3)
    out.pop("feature_cache", None)  # per process; not a sum
    out["folds"] = len(timings)
    return out


def combine_items(paths, output):
    """One items file from the folds' (``paths``: {fold: items.json}), ids prefixed '<fold>/'; its
    value is over all the items (pooled), not the folds' mean that results.json holds."""
    from speechft_upstream.checkpoints.atomic import write_json_atomic
    from speechft_upstream.evaluate import items as items_module

    records = {fold: items_module.load(path) for fold, path in paths.items()}
    kinds = {r["kind"] for r in records.values()}
    if len(kinds) != 1:
        raise SpeechFTError(f"{output}: the folds' items are of different kinds ({', '.join(sorted(kinds))})")
    first = next(iter(records.values()))
    record = {"split": first.get("split"), "kind": kinds.pop(),
              "items": {f"{fold}/{key}": outcome for fold, r in records.items() for key, outcome in r["items"].items()},
              "folds": list(records), "files": [str(paths[fold]) for fold in records]}
    if "metric" in first:
        record["metric"] = first["metric"]
    record["value"] = items_module.value(record)
    write_json_atomic(record, output, indent=1)
    return output


def read_seed(folder, seed, folds):
    """One seed's record over the folds of an evaluation stage ``folder`` (runner checkpoints of
    every fold deleted), the files to keep (relative to ``folder``) and {items|dev_items: path}."""
    folder, exp = Path(folder), Path(folder) / "exp"
    mean_file = exp / f"seed{seed}" / "results.json"
    result = json.loads(mean_file.read_text())
    if sorted(result.get("folds") or {}) != sorted(folds):
        raise SpeechFTError(f"{mean_file}: expected the mean of {', '.join(folds)}, got {result.get('folds')}")
    runs = {fold: read_run("ER", exp / fold / f"seed{seed}") for fold in folds}
    devs = [r["dev"] for r in runs.values()]
    run = {"test": result["value"], "dev": sum(devs) / len(devs),
           "checkpoint_step": {f: r["checkpoint_step"] for f, r in runs.items()},
           "steps_run": {f: r["steps_run"] for f, r in runs.items()},
           "timing": {m: _timing_sum([r["timing"][m] for r in runs.values()]) for m in ("train", "evaluate")},
           "folds": {f: {"test": r["test"], "dev": r["dev"]} for f, r in runs.items()}}
    kept = [f"exp/seed{seed}/results.json"] + [f"exp/{fold}/seed{seed}/results.json" for fold in folds]
    paths = {}
    for name in ITEM_FILES:
        found = {fold: exp / fold / f"seed{seed}" / f"{name}.json" for fold in folds}
        there = [fold for fold, path in found.items() if path.is_file()]
        if not there:
            continue
        if len(there) != len(folds):
            missing = next(path for path in found.values() if not path.is_file())
            raise SpeechFTError(f"{missing}: no such file (the other folds wrote their {name}.json)")
        paths[name] = str(combine_items(found, folder / f"{name}_seed{seed}.json"))
        kept.append(f"{name}_seed{seed}.json")
    return run, kept, paths
