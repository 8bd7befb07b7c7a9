"""The report's rows: one per encoder row × task (test split) with seeds, CI and p-values, and the
α sweep of the default experiment (report.py writes them out)."""

from speechft_upstream.benchmark import plan as plans
from speechft_upstream.benchmark.sizes import EXTRA_METRICS, SCALE, TASKS, UNIT, base_task

MAIN = ("fbank", "theta0", "theta_prime", "theta_hat")


def scaled(task, value):
    """A recipe's value in the report's unit (sizes.SCALE); None (no dev split) stays None."""
    return None if value is None else round(SCALE[base_task(task)] * value, 4)


def unit_label(task):
    return "%" if UNIT[base_task(task)] == "%" else ""


def head_label(task, metric=None, higher=None):
    spec = TASKS[base_task(task)]
    metric = metric or spec[3]
    higher = spec[4] if higher is None else higher
    return " ".join(x for x in (task, metric, unit_label(task), "↑" if higher else "↓") if x)


def plan_of(context):
    return context.get("plan") or plans.default_plan(context.get("finetune_task", "PR"))[:1]


def chosen_of(context):
    plan = plan_of(context)
    return context.get("chosen") or {plan[0].name: dict(context["theta_hat"], by_alpha=context["by_alpha"])}


def row_specs(context):
    """[(row name, evaluation encoder, {p key: row compared with}, more fields, tasks)]: FBANK, θ0,
    then each experiment's θ′ and (merged ones) θ̂ at its chosen α, in plan order."""
    tasks = list(context["tasks"])
    everywhere = tasks + list(context.get("extra_tasks", []))
    specs = [("fbank", "fbank", {}, {}, everywhere), ("theta0", "theta0", {}, {}, everywhere)]
    chosen = chosen_of(context)
    for entry in plan_of(context):
        mine = tasks + ([entry.extra_task] if entry.extra_task else [])
        if not entry.merged or 1.0 in context["alphas"]:
            specs.append((entry.prime, entry.prime, {"theta0": "theta0"}, {}, mine))
        if entry.merged:
            hat = chosen[entry.name]
            specs.append((entry.hat, hat["encoder"], {"theta_prime": entry.prime, "theta0": "theta0"},
                          {"alpha": hat["alpha"]}, mine))
    return specs


def rows_of(context):
    """One row per encoder row × task (test split), in each task's unit (percent; QbE's MTWV a
    fraction): the mean over seeds, the per-seed values, the 95 % CI and, on θ̂ / θ′ / baseline
    rows, paired-test p-values (summary.py: θ̂_X against its own θ′_X and θ0; θ′ and baseline rows
    against θ0). A task with more metrics (SF) keeps them all in ``metrics``; their own rows are
    ``context["extra_rows"]`` (results.json holds both)."""
    from speechft_upstream.benchmark import summary

    evals = context["evals"]
    specs = row_specs(context)
    source = {name: encoder for name, encoder, _, _, _ in specs}
    versus = {name: against for name, _, against, _, _ in specs}
    rows, extra = [], []
    for name, encoder, _, fields, tasks in specs:
        for task in tasks:
            _, _, _, metric, higher = TASKS[base_task(task)]
            out = evals[(encoder, task)]
            row = {"encoder": name, "task": task, "metric": metric, "value": scaled(task, out["test"]),
                   "split": "test", "dev_value": scaled(task, out["dev"]), "higher_is_better": higher,
                   "unit": UNIT[base_task(task)], **fields}
            if out.get("deterministic"):
                row["deterministic"] = True  # one run, no seed spread (QbE's DTW)
            rows.append(row)
            for other_name, other_higher in EXTRA_METRICS.get(task, {}).values():
                other = out["metrics"][other_name]
                extra.append(dict(row, metric=other_name, value=scaled(task, other["test"]),
                                  dev_value=scaled(task, other["dev"]), higher_is_better=other_higher,
                                  main_metric=metric))
    context["tests"] = summary.decorate(rows, evals, source, versus=versus)
    summary.decorate(extra, evals, source, paired=False, versus=versus)
    for row in rows + extra:
        siblings = [r for r in rows + extra if (r["encoder"], r["task"]) == (row["encoder"], row["task"])]
        if len(siblings) > 1:
            row["metrics"] = {r["metric"]: r["value"] for r in siblings}
    context["extra_rows"] = extra
    context["row_source"] = source
    return rows


def sweep_of(context):
    """Every evaluated α (0 = θ0, 1 = θ′) × task × metric of the default experiment, dev and test."""
    evals = context["evals"]
    main = plan_of(context)[0]
    rows = []
    for alpha in (0.0, *context["alphas"]):
        name = "theta0" if alpha == 0.0 else main.alpha_encoder(alpha)
        for task in context["tasks"]:
            metric = TASKS[task][3]
            out = evals[(name, task)]
            rows.append({"alpha": alpha, "encoder": name, "task": task, "metric": metric,
                         "dev": scaled(task, out["dev"]), "test": scaled(task, out["test"])})
            for other, _ in EXTRA_METRICS.get(task, {}).values():
                rows.append({"alpha": alpha, "encoder": name, "task": task, "metric": other,
                             "dev": scaled(task, out["metrics"][other]["dev"]),
                             "test": scaled(task, out["metrics"][other]["test"])})
    return rows
