"""The benchmark's report: results.{md,csv,json}, scores.json, alpha_sweep.{csv,json}, plots."""

import csv
import json
import shutil
from pathlib import Path

from speechft_upstream.benchmark.sizes import ALPHAS, BASELINE, EXTRA_METRICS, NO_DEV, SCALE, TASKS, UNIT

MAIN = ("fbank", "theta0", "theta_prime", "theta_hat")
LABELS = {"fbank": "FBANK", "theta0": "θ0", "theta_prime": "θ′", "theta_hat": "θ̂"}
DESCRIBE = {"fbank": "FBANK features (s3prl's `fbank` upstream): the score's lower reference",
            "theta0": "θ0, the pre-trained encoder",
            "theta_prime": "θ′, θ0 after stable fine-tuning on {finetune_task}",
            "theta_hat": "θ̂ = (1−α)·θ0 + α·θ′, α chosen on dev"}


def _scaled(task, value):
    """A recipe's value in the report's unit (sizes.SCALE); None (no dev split) stays None."""
    return None if value is None else round(SCALE[task] * value, 4)


def unit_label(task):
    return "%" if UNIT[task] == "%" else ""


def head_label(task, metric=None, higher=None):
    metric = metric or TASKS[task][3]
    higher = TASKS[task][4] if higher is None else higher
    return " ".join(x for x in (task, metric, unit_label(task), "↑" if higher else "↓") if x)


def rows_of(context):
    """One row per main encoder × task (test split), in each task's unit (percent; QbE's MTWV a
    fraction): the mean over seeds, the per-seed values, the 95 % CI and, on θ̂ / θ′ rows,
    paired-test p-values (summary.py). A task with more metrics (SF) keeps them all in
    ``metrics``; their own rows are ``context["extra_rows"]`` (results.json holds both)."""
    from speechft_upstream.benchmark import summary

    evals, hat = context["evals"], context["theta_hat"]
    source = {"fbank": "fbank", "theta0": "theta0", "theta_prime": "theta_prime", "theta_hat": hat["encoder"]}
    rows, extra = [], []
    for encoder in MAIN:
        for task in context["tasks"]:
            _, _, _, metric, higher = TASKS[task]
            out = evals[(source[encoder], task)]
            row = {"encoder": encoder, "task": task, "metric": metric, "value": _scaled(task, out["test"]),
                   "split": "test", "dev_value": _scaled(task, out["dev"]), "higher_is_better": higher,
                   "unit": UNIT[task]}
            if encoder == "theta_hat":
                row["alpha"] = hat["alpha"]
            if out.get("deterministic"):
                row["deterministic"] = True  # one run, no seed spread (QbE's DTW)
            rows.append(row)
            for name, other_higher in EXTRA_METRICS.get(task, {}).values():
                other = out["metrics"][name]
                extra.append(dict(row, metric=name, value=_scaled(task, other["test"]),
                                  dev_value=_scaled(task, other["dev"]), higher_is_better=other_higher,
                                  main_metric=metric))
    context["tests"] = summary.decorate(rows, evals, source)
    summary.decorate(extra, evals, source, paired=False)
    for row in rows + extra:
        siblings = [r for r in rows + extra if (r["encoder"], r["task"]) == (row["encoder"], row["task"])]
        if len(siblings) > 1:
            row["metrics"] = {r["metric"]: r["value"] for r in siblings}
    context["extra_rows"] = extra
    return rows


def sweep_of(context):
    """Every evaluated α (0 = θ0, 1 = θ′) × task × metric, dev and test, in the tasks' units."""
    evals = context["evals"]
    rows = []
    for alpha in (0.0, *context["alphas"]):
        name = "theta0" if alpha == 0.0 else "theta_prime" if alpha == 1.0 else f"alpha{alpha:g}"
        for task in context["tasks"]:
            metric = TASKS[task][3]
            out = evals[(name, task)]
            rows.append({"alpha": alpha, "encoder": name, "task": task, "metric": metric,
                         "dev": _scaled(task, out["dev"]), "test": _scaled(task, out["test"])})
            for other, _ in EXTRA_METRICS.get(task, {}).values():
                rows.append({"alpha": alpha, "encoder": name, "task": task, "metric": other,
                             "dev": _scaled(task, out["metrics"][other]["dev"]),
                             "test": _scaled(task, out["metrics"][other]["test"])})
    return rows


def _fmt(value):
    return f"{value:.2f}"


def write(out, context):
    """Every report file, written into a temp folder beside ``out`` and then moved in: a full disk
    gives one error line and leaves the previous report as it was."""
    from speechft_upstream.checkpoints import atomic

    out = Path(out)
    with atomic.folder_output(out) as tmp:
        written = _write(tmp, context)
    return [out / Path(p).relative_to(tmp) for p in written]


def _write(out, context):
    from speechft_upstream.evaluate import score

    rows = rows_of(context)
    all_rows = rows + context["extra_rows"]  # results.json: every metric, so speechft score can read it
    sweep = sweep_of(context)
    refs = score.load_references(score.MINI_REFERENCES)
    test_scores = score.compute(all_rows, refs, split="test", baseline_encoder=BASELINE, source="results.json")
    written = []

    (out / "results.json").write_text(json.dumps(all_rows, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    fields = ["encoder", "task", "metric", "value", "split", "dev_value", "higher_is_better", "unit", "alpha",
              "ci95_low", "ci95_high", "seed_values", "p_vs_theta_prime", "p_vs_theta0", "main_metric"]
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in all_rows:
            ci = r.get("ci95") or [None, None]
            writer.writerow(dict(r, ci95_low=ci[0], ci95_high=ci[1],
                                 seed_values=" ".join(f"{v:g}" for v in r.get("seed_values", []))))
    with open(out / "alpha_sweep.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["alpha", "encoder", "task", "metric", "dev", "test"])
        writer.writeheader()
        writer.writerows(sweep)
    scores = {"references": refs["name"], "references_file": Path(refs["path"]).name, "split": "test",
              "scores": {e: s["score"] for e, s in test_scores.items()}, "detail": test_scores,
              "alpha": context["theta_hat"]["alpha"],
              "dev_score_by_alpha": {f"{a:g}": s for a, s in context["by_alpha"].items()},
              "dev_scores": {e: s["score"] for e, s in context["dev_scores"].items()}}
    (out / "scores.json").write_text(json.dumps(scores, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "alpha_sweep.json").write_text(json.dumps(sweep, indent=2) + "\n", encoding="utf-8")
    written += [out / n for n in ("results.json", "results.csv", "scores.json", "alpha_sweep.csv", "alpha_sweep.json")]
    from speechft_upstream.benchmark import provenance

    written += provenance.write(out, context, rows)

    analysis_dir = out / "analysis"
    if analysis_dir.exists():
        shutil.rmtree(analysis_dir)
    shutil.copytree(context["analysis"]["dir"], analysis_dir)
    written.append(analysis_dir)

    written += plot_sweep(out / "alpha_sweep.png", context, sweep, rows)
    written += plot_bars(out / "bars.png", rows, context)
    (out / "results.md").write_text("\n".join(markdown(context, rows, test_scores, analysis_dir)) + "\n",
                                    encoding="utf-8")
    written.insert(0, out / "results.md")
    (out / "summary.txt").write_text("\n".join(table_lines(rows, test_scores, context)) + "\n", encoding="utf-8")
    return written


def table_lines(rows, test_scores, context):
    """The pivot table (encoders × tasks, test) with the SUPERB-style score, as Markdown lines."""
    from speechft_upstream.benchmark import summary

    columns = []  # (task, metric, higher): each task's main metric, then its others (SF's CER)
    for t in context["tasks"]:
        columns.append((t, TASKS[t][3], TASKS[t][4]))
        columns += [(t, name, higher) for name, higher in EXTRA_METRICS.get(t, {}).values()]
    head = "| encoder | " + " | ".join(head_label(t, m, h) for t, m, h in columns) + " | score (test) |"
    lines = [head, "|---|" + "---:|" * (len(columns) + 1)]
    by = {(r["encoder"], r["task"], r["metric"]): r for r in rows + context.get("extra_rows", [])}
    for encoder in MAIN:
        label = LABELS[encoder] + (f" (α = {context['theta_hat']['alpha']:g})" if encoder == "theta_hat" else "")
        cells = [summary.cell(by[(encoder, t, m)]) + summary.marks(by[(encoder, t, m)]) for t, m, _ in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {test_scores[encoder]['score']:.1f} |")
    return lines


def _ft(context):
    from speechft_upstream.benchmark.sizes import FINETUNE_TASKS

    task = context.get("finetune_task", "PR")
    return f"{task} (`{FINETUNE_TASKS[task][0]} finetune`"


def _data_line(context):
    data = context["corpus"]
    if data.get("data_root"):
        return (f"- data: `{data['dir']}` (--data-root; {data['files']} files, file-list fingerprint "
                f"{data['fingerprint'][:16]}…, see run.json)")
    return (f"- corpus: {data['speakers']} eSpeak NG speakers, {data['minutes']} min of audio (size "
            f"`{data['size']}`); ER is prosody classification (neutral, question, excited, calm)")


def markdown(context, rows, test_scores, analysis_dir):
    hat = context["theta_hat"]
    sizes = context["sizes"]
    theta0 = context["theta0"]
    lines = ["# speechft mini-SUPERB: Speech-FT end to end, offline", ""]
    if context["size"] not in ("full", "superb"):
        lines += [f"**Size: `{context['size']}`** (`speechft benchmark --{context['size']}`): fewer steps and a "
                  "smaller corpus than `./run.sh`; numbers are noisy.", ""]
    lines += ["Test split, SUPERB protocol (frozen encoder, weighted sum of all hidden states, the task's "
              "standard head, trained until dev stops improving; the dev-best checkpoint is tested). Values in percent "
              "(QbE's MTWV: a fraction, at most 1; QbE has no head: DTW on every layer, the dev-best layer tested), "
              "mean ± 95 % CI half-width over the seeds (no ± where there is one run: QbE's DTW is deterministic) († θ̂ ≠ θ′, ‡ ≠ θ0 at p < 0.05, paired test; see "
              "'Seeds, confidence intervals, significance'); score = 1000 × mean over "
              "tasks of (s − FBANK)/(perfect − FBANK) (`speechft score --references mini_superb_references.yaml`; "
              "FBANK = 0, perfect = 1000).", ""]
    lines += table_lines(rows, test_scores, context)
    described = (DESCRIBE[e].format(finetune_task=context.get("finetune_task", "PR")) for e in MAIN)
    lines += ["", "- " + "\n- ".join(described), f"- tasks: {', '.join(context['tasks'])}",
              f"- θ0: {theta0['source']}; θ′: stable fine-tuning on {_ft(context)}, "
              f"{sizes['finetune']['steps']} steps, batch {sizes['finetune']['batch']}, lr {sizes['finetune']['lr']}, "
              f"β {sizes['finetune']['beta']})", _data_line(context), ""]

    lines += ["## α chosen on dev", "",
              "Merged θ̂_α were written for α = " + ", ".join(f"{a:g}" for a in ALPHAS) + "; θ0 (α = 0), "
              + ", ".join(f"θ̂_{a:g}" for a in context["alphas"] if a != 1.0) + " and θ′ (α = 1, which θ̂_1 "
              "equals up to rounding) were evaluated on every task. The dev "
              "score of α is the same SUPERB-style score computed on the **dev** splits (FBANK's dev values as "
              "the lower point; each task's main metric, so SF's F1 and not its CER"
              + (f"; {', '.join(t for t in context['tasks'] if t in NO_DEV)} left out: no dev split"
                 if any(t in NO_DEV for t in context["tasks"]) else "")
              + "); the α with the highest dev score is θ̂, and only its test numbers are reported "
              "above (the test column is shown for reading the sweep, not for choosing).", "", "| α | dev score | test score |", "|---:|---:|---:|"]
    from speechft_upstream.evaluate import score

    refs = score.load_references(score.MINI_REFERENCES)
    sweep_test = [{"encoder": r["encoder"], "task": r["task"], "metric": r["metric"], "value": r["test"],
                   "split": "test"} for r in sweep_of(context)]
    fb = [{"encoder": BASELINE, "task": r["task"], "metric": r["metric"], "value": r["value"], "split": "test"}
          for r in rows + context["extra_rows"] if r["encoder"] == BASELINE]
    sweep_scores = score.compute(sweep_test + fb, refs, split="test", baseline_encoder=BASELINE, source="sweep")
    theta0_dev = context["dev_scores"].get("theta0", {}).get("score")
    lines.append(f"| 0 (θ0) | {theta0_dev:.1f} | {sweep_scores['theta0']['score']:.1f} |")
    for a, s in context["by_alpha"].items():
        name = "theta_prime" if a == 1.0 else f"alpha{a:g}"
        mark = " **← chosen**" if a == hat["alpha"] else ""
        lines.append(f"| {a:g}{' (θ′)' if a == 1.0 else ''}{mark} | {s:.1f} | {sweep_scores[name]['score']:.1f} |")
    lines += ["", "Per task and α: `alpha_sweep.csv`; plot: `alpha_sweep.png`.", "",
              "![score against α](alpha_sweep.png)", "", "![per task](bars.png)", ""]

    lines += ["## What was measured", ""] + verdict(rows, hat, context["tasks"]) + [""]
    from speechft_upstream.benchmark import provenance

    lines += provenance.statistics_lines(context, rows)

    lines += ["## Per-layer similarity to θ0 (`speechft analyze`)", "",
              "Models: θ′ (`theta_prime`), the chosen θ̂ when it is not θ′ (`theta_hat_alpha…`) and the merge at "
              "the paper's α = 0.25 when that is not the chosen one (`merged_alpha0.25`).", ""]
    md = analysis_dir / "similarity.md"
    if md.is_file():
        lines += md.read_text(encoding="utf-8").splitlines()
    lines += ["", "![similarity](analysis/similarity.png)", ""]

    lines += ["## Runs", "", "| stage | seconds | |", "|---|---:|---|"]
    for stage, (seconds, reused) in context["times"].items():
        lines.append(f"| {stage} | {seconds:.0f} | {'reused' if reused else ''} |")
    from speechft_upstream.benchmark.provenance import evaluation_cost
    from speechft_upstream.benchmark.sizes import eval_budget

    budgets = {t: eval_budget(context["size"], t) for t in context["tasks"]}
    evals = ", ".join(f"{t}: DTW on layer(s) {b['layer']}, no head" if b.get("dtw") else
                      f"{t} at most {b['steps']} steps × batch {b['batch']}, lr {b['lr']:g}, dev every "
                      f"{b['eval_every']}" + (" (no dev split: the last checkpoint)" if t in NO_DEV else "")
                      for t, b in budgets.items())
    cost = evaluation_cost(context["evals"])
    lines += ["", f"Evaluation heads: {evals}; patience {sizes.get('patience')} dev evaluations; gradient "
              f"accumulation 1; {context['jobs']} run(s) at a time on {context['device']}.", "",
              f"Where the evaluation time went (CPU seconds over all {cost['runs']} runs, from each run's "
              f"`timing_*.json`): runner start-up {cost['startup']:.0f}, upstream forward in training "
              f"{cost['upstream_forward_train']:.0f}, the rest of training (head, optimizer, data) "
              f"{cost['train_other']:.0f}, upstream forward in dev/test passes {cost['upstream_forward_evaluate']:.0f}, "
              f"the rest of those passes {cost['evaluate_other']:.0f}; {cost['steps']} head steps in all.", "",
              f"Run: {context['jobs']} run(s) at a time on "
              f"{context['device']}. Wall time of this run: {context['wall_seconds']:.0f} s. Stage outputs: "
              f"`{context['work']}`.", "",
              "Rows: `results.json` / `results.csv` (one per encoder × task, test split, with the dev value); "
              "scores: `scores.json`."]
    return lines


def verdict(rows, hat, tasks):
    """Plain statements of what the numbers show (no claims beyond them): a difference counts
    only where the paired test gives p < 0.05; otherwise it is 'not resolved'."""
    from speechft_upstream.benchmark.summary import ALPHA_LEVEL

    by = {(r["encoder"], r["task"]): r for r in rows}

    def compare(a, b, task):
        """'better' / 'worse' / 'not resolved' for a against b (b's p-value key on a's row)."""
        ra, rb = by[(a, task)], by[(b, task)]
        p = ra.get(f"p_vs_{b}")
        if p is None or p >= ALPHA_LEVEL:
            return "not resolved", p
        ahead = ra["value"] > rb["value"] if ra["higher_is_better"] else ra["value"] < rb["value"]
        return ("better" if ahead else "worse"), p

    def listing(a, b, task_list, want):
        found = []
        for t in task_list:
            outcome, p = compare(a, b, t)
            if outcome == want:
                found.append(f"{t} (p = {p:.3g})")
        return ", ".join(found) or "none"

    lines = []
    pr = "PR"
    lines.append(f"- Fine-tuning task (PR, PER ↓, mean over seeds): θ0 {by[('theta0', pr)]['value']:.2f}, θ′ "
                 f"{by[('theta_prime', pr)]['value']:.2f}, θ̂ {by[('theta_hat', pr)]['value']:.2f}; θ̂ against θ0: "
                 + "{} (p = {})".format(*[(x if isinstance(x, str) else ("n/a" if x is None else f"{x:.3g}"))
                                          for x in compare("theta_hat", "theta0", pr)]) + ".")
    others = [t for t in tasks if t != pr]
    lines.append(f"- Other tasks where θ′ is significantly worse than θ0: {listing('theta_prime', 'theta0', others, 'worse')}"
                 f" (of {', '.join(others)}).")
    lines.append(f"- Other tasks where θ̂ (α = {hat['alpha']:g}) is significantly better than θ′: "
                 f"{listing('theta_hat', 'theta_prime', others, 'better')}; significantly worse: "
                 f"{listing('theta_hat', 'theta_prime', others, 'worse')}; significantly worse than θ0: "
                 f"{listing('theta_hat', 'theta0', others, 'worse')}.")
    lines.append("- Every other difference in the table is not resolved by the paired test at p < 0.05.")
    untested = [t for t in tasks if by[("theta_hat", t)].get("p_vs_theta0") is None and
                by[("theta_prime", t)].get("p_vs_theta0") is None]
    if untested:
        lines.append(f"- Not tested (no p-value: {', '.join(untested)} leave no per-item outcomes for a paired "
                     "test; see the statistics section): their differences are neither confirmed nor ruled out.")
    return lines


def plot_sweep(path, context, sweep, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(context["tasks"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.2 * (len(tasks) + 1), 3.4))
    fbank = {r["task"]: r for r in rows if r["encoder"] == BASELINE}
    for ax, task in zip(axes, tasks):
        mine = [r for r in sweep if r["task"] == task and r["metric"] == TASKS[task][3]]
        xs = [r["alpha"] for r in mine]
        ax.plot(xs, [float("nan") if r["dev"] is None else r["dev"] for r in mine], marker="o", label="dev")
        ax.plot(xs, [r["test"] for r in mine], marker="s", label="test")
        ax.axhline(fbank[task]["value"], color="grey", ls="--", lw=1, label="FBANK test")
        ax.axvline(context["theta_hat"]["alpha"], color="red", ls=":", lw=1)
        ax.set_title(head_label(task) + (" (no dev)" if task in NO_DEV else ""))
        ax.set_xlabel("α (0 = θ0, 1 = θ′)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    alphas = [0.0, *context["by_alpha"]]
    dev = [context["dev_scores"]["theta0"]["score"], *context["by_alpha"].values()]
    ax.plot(alphas, dev, marker="o", color="black")
    ax.axvline(context["theta_hat"]["alpha"], color="red", ls=":", lw=1, label="chosen α")
    ax.set_title("dev score (selects α)")
    ax.set_xlabel("α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Each task against α: θ̂_α = (1−α)·θ0 + α·θ′ (fine-tuned on PR)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_bars(path, rows, context):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(context["tasks"])
    by = {(r["encoder"], r["task"]): r["value"] for r in rows}
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 3.2))
    colours = {"fbank": "#bbbbbb", "theta0": "#4c72b0", "theta_prime": "#dd8452", "theta_hat": "#55a868"}
    for ax, task in zip(axes, tasks):
        values = [by[(e, task)] for e in MAIN]
        bars = ax.bar(range(len(MAIN)), values, color=[colours[e] for e in MAIN])
        ax.set_xticks(range(len(MAIN)), [LABELS[e] for e in MAIN])
        ax.set_title(head_label(task), fontsize=10)
        ax.bar_label(bars, fmt="%.3f" if UNIT[task] != "%" else "%.1f", fontsize=7)
        ax.margins(y=0.15)
    fig.suptitle(f"Test split: FBANK, θ0, θ′ (PR fine-tuned), θ̂ (α = {context['theta_hat']['alpha']:g})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def summary_lines(out):
    path = Path(out) / "summary.txt"
    lines = ["", f"mini-SUPERB results (test split; {Path(out) / 'results.md'}):", ""]
    return lines + path.read_text(encoding="utf-8").splitlines()
