"""The report's "Claims" section: one sentence per claim of the Speech-FT paper, each held / not
held / not resolved, derived from the numbers by the rules stated in the section."""

import json
from pathlib import Path

from speechft_upstream.benchmark.report_rows import plan_of
from speechft_upstream.benchmark.sizes import encoder_label
from speechft_upstream.benchmark.summary import ALPHA_LEVEL

RULES = (f"Rules: \"at least as good\" means not significantly worse, paired test on the test items at p < "
         f"{ALPHA_LEVEL} (the row's p_vs_theta_prime / p_vs_theta0 in results.json); held when no tested "
         "comparison is significantly worse, not held when one is, not resolved when none could be tested or a "
         "row the claim needs was not run. (c) compares the SUPERB-style test score of θ̂ (the default "
         "experiment) with each baseline's and, per task, runs the same paired test θ̂ against the baseline: held "
         "when θ̂'s score is higher than every baseline's and no baseline is significantly better on a task, not "
         "held when a baseline's score is at least θ̂'s and it is significantly better on some task, otherwise "
         "not resolved. (d) reads `speechft analyze` (mean linear CKA over hidden states, overall relative "
         "weight change ‖θ−θ0‖/‖θ0‖; one measurement each, no test): held when θ̂ has a higher CKA to θ0 and a "
         "larger weight change than every baseline's θ′, not held when either fails for some baseline.")
PAPER_TASKS = ("PR", "SID", "ER")
PAPER_BASELINES = ("l2", "lora", "early")


def _worse(row, key):
    """True / False / None (no p-value): is the row significantly worse than the one of ``key``?"""
    p = row.get(f"p_vs_{key}")
    if p is None:
        return None
    if p >= ALPHA_LEVEL:
        return False
    other = row["_other_value"][key]
    return row["value"] < other if row["higher_is_better"] else row["value"] > other


def _attach(rows, context):
    by = {(r["encoder"], r["task"]): dict(r) for r in rows}  # copies: results.json's rows stay as they are
    for spec_name, _, versus, _, _ in _specs(context):
        for (name, task), row in by.items():
            if name == spec_name:
                row["_other_value"] = {k: by[(o, task)]["value"] for k, o in versus.items() if (o, task) in by}
    return by


def _specs(context):
    from speechft_upstream.benchmark.report_rows import row_specs

    return row_specs(context)


def _missing(context, kind, names):
    have = {e.name for e in plan_of(context) if e.kind == kind}
    return [n for n in names if n not in have]


def _outcome(checks):
    """checks: [(what, worse True/False/None)] -> (status, significantly worse, untested)."""
    worse = [w for w, bad in checks if bad]
    untested = [w for w, bad in checks if bad is None]
    if worse:
        return "not held", worse, untested
    if len(untested) == len(checks):
        return "not resolved", worse, untested
    return "held", worse, untested


def _sentence(letter, claim, status, worse, untested, missing, extra=""):
    text = f"- ({letter}) {claim}: **{status}**"
    if worse:
        text += f"; significantly worse: {', '.join(worse)}"
    if untested:
        text += f"; no p-value for {', '.join(untested)}"
    if missing:
        text += f"; not run: {', '.join(missing)} (use --paper)"
    return text + (f". {extra}." if extra else ".")


def _decide(letter, claim, checks, missing, unevaluated=()):
    """The sentence of a claim decided by p-values; a missing experiment leaves it not resolved
    (what the experiments run show is said after it)."""
    status, worse, untested = _outcome(checks) if checks else ("not resolved", [], [])
    extra = f"{len(checks)} comparison(s)" if checks else "no comparison"
    if missing and checks:
        extra = f"On the experiments run ({extra}): {status}"
        status = "not resolved"
    if unevaluated:
        extra += f"; not evaluated here: {', '.join(unevaluated)}"
    return _sentence(letter, claim, status, worse, untested, missing, extra)


def _missing_hats(context):
    return [f"theta_hat_{t.lower()}" for t in _missing(context, "finetune", [t.lower() for t in PAPER_TASKS])]


def claim_a(by, context):
    checks = []
    for e in (e for e in plan_of(context) if e.kind == "finetune" and e.merged):
        for task in context["tasks"]:
            if task != e.task and (e.hat, task) in by:
                checks.append((f"{encoder_label(e.hat)} vs {encoder_label(e.prime)} on {task}",
                               _worse(by[(e.hat, task)], "theta_prime")))
    return _decide("a", "θ̂ is at least as good as θ′ on the tasks other than its fine-tuning task", checks,
                   _missing_hats(context))


def claim_b(by, context):
    checks, unevaluated = [], []
    for e in (e for e in plan_of(context) if e.kind == "finetune" and e.merged):
        if (e.hat, e.task) in by:
            checks.append((f"{encoder_label(e.hat)} on {e.task}", _worse(by[(e.hat, e.task)], "theta0")))
        else:  # the fine-tuning task is not among the evaluated tasks (e.g. SID with --tasks PR,KS)
            unevaluated.append(f"{e.task} ({encoder_label(e.hat)})")
    return _decide("b", "θ̂ is at least as good as θ0 on its fine-tuning task", checks, _missing_hats(context),
                   unevaluated)


def claim_c(by, context, test_scores):
    from speechft_upstream.benchmark import summary

    main = plan_of(context)[0]
    missing = [f"theta_prime_{n}" for n in _missing(context, "baseline", PAPER_BASELINES)]
    outcomes, details = [], []
    for e in (e for e in plan_of(context) if e.kind == "baseline"):
        if main.hat not in test_scores or e.prime not in test_scores:
            continue
        ahead = test_scores[main.hat]["score"] > test_scores[e.prime]["score"]
        beaten = []
        for task in context["tasks"]:
            test = summary.paired_p(context["evals"], context["row_source"][main.hat], e.prime, task)
            if test is not None and test["p"] < ALPHA_LEVEL:
                hat, base = by[(main.hat, task)], by[(e.prime, task)]
                if (base["value"] > hat["value"]) == bool(hat["higher_is_better"]):
                    beaten.append(f"{task} (p = {test['p']:.3g})")
        outcomes.append("above" if ahead and not beaten else "below" if not ahead and beaten else "unresolved")
        details.append(f"{encoder_label(e.prime)} {test_scores[e.prime]['score']:.1f}"
                       + (f", significantly better than θ̂ on {', '.join(beaten)}" if beaten else ""))
    if "below" in outcomes:
        status = "not held"
    elif outcomes and not missing and all(o == "above" for o in outcomes):
        status = "held"
    else:
        status = "not resolved"
    score = test_scores.get(main.hat, {}).get("score")
    extra = (f"Scores: θ̂ {score:.1f}; " + "; ".join(details)) if details and score is not None else ""
    return _sentence("c", "Speech-FT (θ̂) scores above the L2, LoRA and early-checkpoint baselines", status, [], [],
                     missing, extra)


def _analysis(folder):
    path = Path(folder) / "similarity.json" if folder else None
    if not path or not path.is_file():
        return {}
    out = {}
    for row in json.loads(path.read_text())["rows"]:
        rec = out.setdefault(row["model"], {"cka": [], "change": row["overall_weight_change"]})
        rec["cka"].append(row["cka"])
    return {m: {"cka": sum(r["cka"]) / len(r["cka"]), "change": r["change"]} for m, r in out.items()}


def claim_d(context):
    hat = context["theta_hat"]
    mine = _analysis(context["analysis"]["dir"])
    label = "theta_prime" if hat["alpha"] == 1.0 else f"theta_hat_alpha{hat['alpha']:g}"
    others = _analysis((context.get("analysis_baselines") or {}).get("dir"))
    missing = [f"theta_prime_{n}" for n in _missing(context, "baseline", PAPER_BASELINES)]
    if label not in mine or not others:
        return _sentence("d", "θ̂ keeps a higher feature similarity to θ0 than the baselines despite a larger weight "
                         "change", "not resolved", [], [], missing or ["the baselines' analysis"])
    h = mine[label]
    fails, parts = [], []
    for name, o in others.items():
        parts.append(f"{encoder_label(name)} CKA {o['cka']:.4f}, change {o['change']:.4g}")
        if not (h["cka"] > o["cka"] and h["change"] > o["change"]):
            fails.append(name)
    status = "not held" if fails else "not resolved" if missing else "held"
    return _sentence("d", "θ̂ keeps a higher feature similarity to θ0 than the baselines despite a larger weight change",
                     status, [], [], missing, f"θ̂ mean CKA {h['cka']:.4f}, weight change {h['change']:.4g}; "
                     + "; ".join(parts) + (f"; fails against {', '.join(fails)}" if fails else ""))


def claims_lines(rows, test_scores, context):
    by = _attach(rows, context)
    lines = ["## Claims", "", RULES, "",
             claim_a(by, context), claim_b(by, context), claim_c(by, context, test_scores), claim_d(context), ""]
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
