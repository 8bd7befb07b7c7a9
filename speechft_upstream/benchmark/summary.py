"""The benchmark's statistics: per-seed values, 95 % CIs, paired tests, what each dev split resolves.

Every value here is in the report's unit of its task (sizes.SCALE: percent; QbE's MTWV a
fraction), as in results.json. The tests themselves are in
``evaluate/stats.py``; this module only feeds them the benchmark's runs:

- ``value`` of a row is the mean over the seeds, ``ci95`` the t-interval of that mean;
- θ̂ rows get ``p_vs_theta_prime`` and ``p_vs_theta0``, θ′ rows ``p_vs_theta0``: a paired test
  per task on the test items, seed s of one encoder paired with seed s of the other (same head
  initialisation and data order); McNemar's exact test for accuracies, a paired bootstrap over
  utterances for error rates. A task whose downstream logs no per-item predictions (SF, SD,
ASV, QbE) gets None, and a task with one run (QbE) no CI: the report says so.
"""

from speechft_upstream.benchmark.sizes import SCALE, TASKS, base_task
from speechft_upstream.errors import SpeechFTError

ALPHA_LEVEL = 0.05  # a difference is marked significant below this p


def seed_values(out, task, split="test", metric=None):
    """Per-seed values in the task's unit; None where a run has no such value (ASV's dev)."""
    values = []
    for _, run in sorted(out["seeds"].items(), key=lambda kv: int(kv[0])):
        value = (run["metrics"][metric] if metric else run)[split]
        values.append(None if value is None else SCALE[base_task(task)] * value)
    return values


def load_items(out, key="items"):
    """{seed: {item: outcome}} and the outcome kind of one evaluation, or (None, None)."""
    from speechft_upstream.evaluate import items

    paths = out.get(key) or {}
    if not paths or len(paths) != len(out.get("seeds", {})):
        return None, None
    kinds, by_seed = set(), {}
    for seed, path in paths.items():
        record = items.load(path)
        kinds.add(record["kind"])
        by_seed[seed] = record["items"]
    if len(kinds) != 1:
        raise SpeechFTError(f"{sorted(paths.values())[0]}: the seeds' items are of different kinds")
    return by_seed, kinds.pop()


def paired_p(evals, a, b, task):
    """p of encoder ``a`` against ``b`` on the task's test items, with the test's details; None
    when either lacks items."""
    from speechft_upstream.evaluate import stats

    if a == b:  # the same runs (θ̂ chosen at α = 1 is θ′)
        return {"p": 1.0, "test": "identical runs"}
    ia, kind = load_items(evals[(a, task)])
    ib, kind_b = load_items(evals[(b, task)])
    if ia is None or ib is None:
        return None
    if kind != kind_b:
        raise SpeechFTError(f"{task}: {a} and {b} have items of different kinds")
    return stats.paired_test(ia, ib, kind, what=f"{task}: {a} against {b}")


VERSUS = {"theta_hat": {"theta_prime": "theta_prime", "theta0": "theta0"}, "theta_prime": {"theta0": "theta0"}}


def decorate(rows, evals, source, paired=True, versus=None):
    """Add seed_values, ci95 (None with one run), dev_seed_values and p-values (None without
    items; ``paired`` False: a task's second metric, never tested) to the rows of
    ``report_rows.rows_of``.

    ``source``: row encoder name -> the evaluation's encoder name (θ̂ -> alpha…). ``versus``: row
    name -> {p key: row compared with}: ``p_vs_<key>`` (θ̂_sid's p_vs_theta_prime is against
    theta_prime_sid); default VERSUS.
    """
    from speechft_upstream.evaluate import stats

    tests = {}
    for row in rows:
        out = evals[(source[row["encoder"]], row["task"])]
        metric = row["metric"] if row.get("main_metric") else None
        values = seed_values(out, row["task"], metric=metric)
        mean, ci = stats.mean_ci(values)
        row["value"] = round(mean, 4)
        row["seed_values"] = [round(v, 4) for v in values]
        row["ci95"] = [round(ci[0], 4), round(ci[1], 4)] if ci else None
        row["dev_seed_values"] = [None if v is None else round(v, 4)
                                  for v in seed_values(out, row["task"], "dev", metric)]
        row["seeds"] = sorted(int(s) for s in out["seeds"])
        row["steps_run"] = [out["seeds"][str(s)].get("steps_run") for s in row["seeds"]]
        against = (VERSUS if versus is None else versus).get(row["encoder"], {})
        for key, other in against.items():
            same = source[row["encoder"]] == source[other]  # θ̂ at α = 1 is θ′: the same runs, p = 1
            test = paired_p(evals, source[row["encoder"]], source[other], row["task"]) if paired or same else None
            row[f"p_vs_{key}"] = None if test is None else test["p"]
            if paired:
                tests[(row["encoder"], other, row["task"])] = test
    return tests


def dev_resolution(evals, tasks, encoder="theta0"):
    """Per task: dev items, standard error and the smallest difference the dev split resolves
    (in percentage points), from ``encoder``'s dev predictions (the last dev pass of each seed,
    averaged over seeds)."""
    from speechft_upstream.evaluate import stats

    out = {}
    for task in tasks:
        by_seed, kind = load_items(evals[(encoder, task)], "dev_items")
        if by_seed is None:
            out[task] = None
            continue
        per_seed = [stats.resolution(items, kind) for items in by_seed.values()]
        n = len(per_seed)
        # items give fractions (items.value), whatever unit the recipe prints: to percentage points
        out[task] = {"items": per_seed[0]["items"], "kind": kind,
                     "standard_error": 100.0 * sum(r["standard_error"] for r in per_seed) / n,
                     "smallest_difference": 100.0 * sum(r["smallest_difference"] for r in per_seed) / n}
    return out


def cell(row):
    """'mean ± half-width' of a row (the CI's half-width; no ± with one seed)."""
    digits = 2 if row.get("unit", "%") == "%" else 4  # QbE's MTWV is a fraction
    if not row.get("ci95"):
        return f"{row['value']:.{digits}f}"
    return f"{row['value']:.{digits}f} ± {(row['ci95'][1] - row['ci95'][0]) / 2:.{digits}f}"


def marks(row):
    """† θ̂ differs from θ′, ‡ from θ0 (paired test, p < 0.05); on θ′ rows ‡ only."""
    out = ""
    if (row.get("p_vs_theta_prime") is not None) and row["p_vs_theta_prime"] < ALPHA_LEVEL:
        out += "†"
    if (row.get("p_vs_theta0") is not None) and row["p_vs_theta0"] < ALPHA_LEVEL:
        out += "‡"
    return out


def higher_is_better(task):
    return TASKS[base_task(task)][4]
