"""The benchmark's report: results.{md,csv,json}, scores.json, alpha_sweep.{csv,json}, plots."""

import csv
import json
import shutil
from pathlib import Path

from speechft_upstream.benchmark.report_claims import claims_lines, verdict
from speechft_upstream.benchmark.report_plots import plot_bars, plot_sweep
from speechft_upstream.benchmark.report_rows import MAIN, rows_of, sweep_of
from speechft_upstream.benchmark.report_tables import paper_table_section, table_lines
from speechft_upstream.benchmark.sizes import ALPHAS, BASELINE, NO_DEV

DESCRIBE = {"fbank": "FBANK features (s3prl's `fbank` upstream): the score's lower reference",
            "theta0": "θ0, the pre-trained encoder",
            "theta_prime": "θ′, θ0 after stable fine-tuning on {finetune_task}",
            "theta_hat": "θ̂ = (1−α)·θ0 + α·θ′, α chosen on dev"}


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
    # the score is over the English tasks, common to every row (a second language's PR has a column)
    english = [r for r in all_rows if r["task"] in context["tasks"]]
    test_scores = score.compute(english, refs, split="test", baseline_encoder=BASELINE, source="results.json")
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
              "dev_scores": {e: s["score"] for e, s in context["dev_scores"].items()},
              "experiments": {e.hat or e.prime: {"kind": e.kind, "task": e.task, "theta_prime": e.prime,
                                                 **({"alpha": c["alpha"], "dev_tasks": c["dev_tasks"],
                                                     "dev_score_by_alpha": {f"{a:g}": v for a, v in
                                                                            c["by_alpha"].items()}}
                                                    if (c := (context.get("chosen") or {}).get(e.name)) else {})}
                              for e in context.get("plan") or []}}
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
    if context.get("analysis_baselines"):  # the baselines' θ′ (claim (d))
        shutil.copytree(context["analysis_baselines"]["dir"], out / "analysis_baselines")
        written.append(out / "analysis_baselines")

    written += plot_sweep(out / "alpha_sweep.png", context, sweep, rows)
    written += plot_bars(out / "bars.png", rows, context)
    (out / "results.md").write_text("\n".join(markdown(context, rows, test_scores, analysis_dir)) + "\n",
                                    encoding="utf-8")
    written.insert(0, out / "results.md")
    (out / "summary.txt").write_text("\n".join(table_lines(rows, test_scores, context)) + "\n", encoding="utf-8")
    return written


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
          for r in rows + context["extra_rows"] if r["encoder"] == BASELINE and r["task"] in context["tasks"]]
    sweep_scores = score.compute(sweep_test + fb, refs, split="test", baseline_encoder=BASELINE, source="sweep")
    theta0_dev = context["dev_scores"].get("theta0", {}).get("score")
    lines.append(f"| 0 (θ0) | {theta0_dev:.1f} | {sweep_scores['theta0']['score']:.1f} |")
    for a, s in context["by_alpha"].items():
        name = "theta_prime" if a == 1.0 else f"alpha{a:g}"
        mark = " **← chosen**" if a == hat["alpha"] else ""
        lines.append(f"| {a:g}{' (θ′)' if a == 1.0 else ''}{mark} | {s:.1f} | {sweep_scores[name]['score']:.1f} |")
    lines += ["", "Per task and α: `alpha_sweep.csv`; plot: `alpha_sweep.png`.", "",
              "![score against α](alpha_sweep.png)", "", "![per task](bars.png)", ""]

    lines += paper_table_section(rows, test_scores, context)
    lines += claims_lines(rows, test_scores, context)
    lines += ["## What was measured (the default experiment)", ""] + verdict(rows, hat, context["tasks"]) + [""]
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
                      + _folds_note(context["evals"], t) for t, b in budgets.items())
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


def _folds_note(evals, task):
    """ER on five IEMOCAP sessions: each seed's value is the mean over the leave-one-session-out folds."""
    folds = max((len(out.get("folds") or ()) for (_, t), out in evals.items() if t == task), default=0)
    return (f" (each seed's value the mean of {folds} leave-one-session-out folds, each fold its own head; "
            "dev the mean of the folds' dev-best values)") if folds > 1 else ""


def summary_lines(out):
    path = Path(out) / "summary.txt"
    lines = ["", f"mini-SUPERB results (test split; {Path(out) / 'results.md'}):", ""]
    return lines + path.read_text(encoding="utf-8").splitlines()
