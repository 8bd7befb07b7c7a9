"""The report's tables: the default experiment's (FBANK, θ0, θ′, θ̂) and the paper's layout
(θ0; per fine-tuning task θ′ and θ̂; the baselines; multi-task; unsupervised)."""

from speechft_upstream.benchmark.report_rows import MAIN, head_label, plan_of
from speechft_upstream.benchmark.sizes import EXTRA_METRICS, TASKS, base_task, encoder_label

LABELS = {"fbank": "FBANK", "theta0": "θ0", "theta_prime": "θ′", "theta_hat": "θ̂"}
BASELINE_LABELS = {"l2": "L2 toward θ0", "lora": "LoRA", "early": "early checkpoint"}


def columns_of(context, extra=True):
    """(task, metric, higher): each task's main metric, then its others (SF's CER); the extra
    tasks (a second language's PR) last."""
    columns = []
    for t in list(context["tasks"]) + (list(context.get("extra_tasks", [])) if extra else []):
        spec = TASKS[base_task(t)]
        columns.append((t, spec[3], spec[4]))
        columns += [(t, name, higher) for name, higher in EXTRA_METRICS.get(t, {}).values()]
    return columns


def _cells(by, name, columns):
    from speechft_upstream.benchmark import summary

    cells = []
    for t, m, _ in columns:
        row = by.get((name, t, m))
        cells.append("—" if row is None else summary.cell(row) + summary.marks(row))
    return cells


def _score(test_scores, name):
    return f"{test_scores[name]['score']:.1f}" if name in test_scores else "—"


def table_lines(rows, test_scores, context):
    """The default experiment's pivot table (encoders × tasks, test) with the SUPERB-style score."""
    columns = columns_of(context, extra=False)
    head = "| encoder | " + " | ".join(head_label(t, m, h) for t, m, h in columns) + " | score (test) |"
    lines = [head, "|---|" + "---:|" * (len(columns) + 1)]
    by = {(r["encoder"], r["task"], r["metric"]): r for r in rows + context.get("extra_rows", [])}
    for encoder in MAIN:
        label = LABELS[encoder] + (f" (α = {context['theta_hat']['alpha']:g})" if encoder == "theta_hat" else "")
        lines.append(f"| {label} | " + " | ".join(_cells(by, encoder, columns)) + f" | {_score(test_scores, encoder)} |")
    return lines


def paper_rows(context):
    """[(group, row name, label)] in the paper's order."""
    plan = plan_of(context)
    chosen = context.get("chosen") or {}
    out = [("pre-trained", "theta0", "θ0")]
    for e in (e for e in plan if e.kind == "finetune"):
        out.append((f"fine-tuned on {e.task}", e.prime, f"θ′ ({e.task}, stable fine-tuning)"))
        alpha = (chosen.get(e.name) or context["theta_hat"])["alpha"]
        out.append((f"fine-tuned on {e.task}", e.hat, f"θ̂ ({e.task}, Speech-FT, α = {alpha:g})"))
    for e in (e for e in plan if e.kind == "baseline"):
        out.append(("baselines", e.prime, f"{BASELINE_LABELS.get(e.name, e.name)} ({e.task})"))
    for e in (e for e in plan if e.kind == "multi"):
        out.append(("multi-task", e.prime, "mean θ′ (α = 1: θ0 + mean τ)"))
        out.append(("multi-task", e.hat, f"θ̂ multi-task (α = {chosen[e.name]['alpha']:g})"))
    for e in (e for e in plan if e.kind == "unsupervised"):
        language = e.options.get("language", "")
        out.append(("unsupervised", e.prime, f"θ′ (continued pre-training, {language})"))
        out.append(("unsupervised", e.hat, f"θ̂ (merged back, α = {chosen[e.name]['alpha']:g})"))
    return out


def paper_table_lines(rows, test_scores, context):
    """The paper's table: every row of paper_rows, every task (and extra task) and the score."""
    columns = columns_of(context)
    head = ("| | row | " + " | ".join(head_label(t, m, h) for t, m, h in columns)
            + " | score (test) |")
    lines = [head, "|---|---|" + "---:|" * (len(columns) + 1)]
    by = {(r["encoder"], r["task"], r["metric"]): r for r in rows + context.get("extra_rows", [])}
    present = {r["encoder"] for r in rows}
    last = None
    for group, name, label in paper_rows(context):
        if name not in present:
            continue
        shown = group if group != last else ""
        last = group
        lines.append(f"| {shown} | {label} `{name}` | " + " | ".join(_cells(by, name, columns))
                     + f" | {_score(test_scores, name)} |")
    return lines


def paper_table_section(rows, test_scores, context):
    extra = context.get("extra_tasks") or []
    lines = ["## The paper's table", "",
             "Test split; each cell mean ± 95 % CI half-width over the seeds; † differs from its own θ′ (θ̂ rows: "
             "θ̂_X against θ′_X), ‡ differs from θ0 (θ′, θ̂ and baseline rows), paired test p < 0.05; — not "
             "evaluated. The score is over the English tasks ("
             + ", ".join(context["tasks"]) + ")"
             + (f"; {', '.join(extra)} (the second language) is a column of its own, evaluated for θ0, FBANK and "
                "the unsupervised rows only; the unsupervised θ̂'s α is chosen on the dev score over the English "
                "tasks and " + ", ".join(extra) + ", each task weighted equally" if extra else "") + ".", ""]
    lines += paper_table_lines(rows, test_scores, context)
    missing = [e for e in ("multi", "unsupervised") if not any(p.kind == e for p in plan_of(context))]
    if missing:
        lines += ["", f"Not run: {', '.join(missing)} experiment(s) and the other fine-tuning tasks "
                  "(`speechft benchmark --paper`)."]
    skipped = context.get("skipped") or []
    if skipped:
        lines += ["", f"Skipped in this checkout (its producer module is missing; size {context['size']}): "
                  + ", ".join(skipped) + "."]
    lines += [""]
    chosen = context.get("chosen") or {}
    merged = [e for e in plan_of(context) if e.merged and e.name in chosen]
    if len(merged) > 1:
        lines += ["α of each merged experiment, chosen on its dev score:", "",
                  "| θ̂ | dev tasks | " + " | ".join(f"α = {a:g}" for a in context["alphas"]) + " | chosen α |",
                  "|---|---|" + "---:|" * (len(context["alphas"]) + 1)]
        for e in merged:
            c = chosen[e.name]
            cells = [f"{c['by_alpha'][a]:.1f}" if a in c["by_alpha"] else "—" for a in context["alphas"]]
            lines.append(f"| {encoder_label(e.hat)} | {', '.join(c.get('dev_tasks', []))} | " + " | ".join(cells)
                         + f" | {c['alpha']:g} |")
        lines += [""]
    return lines
