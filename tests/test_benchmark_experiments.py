"""The benchmark's plan (benchmark/plan.py): several experiments in one run, on the smoke size.

A plan of three experiments, run in test_benchmark.py's smoke --work (conftest.benchmark_smoke,
so corpus, θ0, θ′ on PR, its merges and every PR-experiment evaluation are reused): the default
PR experiment, stable fine-tuning on SID (θ′_sid with its own merges, α sweep and dev choice),
and the multi-task merge θ0 + α·mean(τ_PR, τ_SID). What is checked: the stage folders of the
new experiments (and that the old ones are reused), the multi-task merge's arithmetic, each
experiment's α being the best of its own dev scores, the rows and their p-value keys (θ̂_X
against its own θ′_X), the paper-layout table and the claims section.
"""

import json
import textwrap

import pytest

from tests.conftest import REPO, assert_ok, run_py

NEW = {"theta_prime_sid", "theta_hat_sid", "theta_prime_multi", "theta_hat_multi"}
TASKS = ("PR", "KS", "IC")

RUN = textwrap.dedent("""
    import sys
    from speechft_upstream.benchmark import pipeline, plan
    entries = [plan.default_plan()[0], plan.Experiment("sid", "finetune", "SID"),
               plan.Experiment("multi", "multi", sources=("pr", "sid"))]
    pipeline.run(out=sys.argv[1], work=sys.argv[2], size="smoke", jobs=2, device="cpu", plan=entries)
""")


@pytest.fixture(scope="module")
def planned(benchmark_smoke, tmp_path_factory):
    out = tmp_path_factory.mktemp("benchmark_plan") / "results"
    work = benchmark_smoke["work"] / "smoke"
    proc = run_py(["-c", RUN, out, work], env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert_ok(proc)
    return {"out": out, "work": work, "proc": proc, "rows": json.loads((out / "results.json").read_text()),
            "scores": json.loads((out / "scores.json").read_text())}


def test_new_experiments_get_their_own_stages_and_the_old_ones_are_reused(planned):
    err, work = planned["proc"].stderr, planned["work"]
    for stage in ("corpus", "theta0", "finetune_pr", "merge", "analyze"):
        assert f"reusing {work / stage}" in err, stage
    assert "reusing 12 finished evaluation(s)" in err  # FBANK, θ0, θ̂_0.25, θ′ on PR, KS, IC
    assert "experiments: theta_prime, theta_prime_sid, theta_prime_multi; 24 evaluations (encoder × task), 48 evaluation runs" in err
    for folder in ("finetune_sid", "merge_sid", "merge_multi"):
        assert (work / folder / "stage.json").is_file(), folder
    for encoder in ("sid_alpha0.25", "theta_prime_sid", "multi_alpha0.25", "theta_prime_multi"):
        for task in TASKS:
            assert (work / "evaluate" / encoder / task.lower() / "stage.json").is_file(), (encoder, task)
    params = json.loads((work / "finetune_sid" / "stage.json").read_text())["params"]
    assert params["task"] == "SID"


def test_multi_task_merge_is_theta0_plus_the_mean_task_vector(planned):
    import torch

    from speechft_upstream.checkpoints import files
    from speechft_upstream.merge.run import keeps_base

    work = planned["work"]

    def weights(path):
        state, family = files.read_encoder(path)
        return {n: t for n, t in files.weights(state, family).items() if not keeps_base(n, family)}

    t0 = weights(json.loads((work / "theta0" / "stage.json").read_text())["outputs"]["path"])
    pr = weights(work / "finetune_pr" / "exp" / "theta_prime.pt")
    sid = weights(work / "finetune_sid" / "exp" / "theta_prime.pt")
    for alpha in ("0.25", "1"):
        merged = weights(work / "merge_multi" / f"theta_hat_alpha{alpha}.pt")
        changed = 0
        for name, base in t0.items():
            if name not in merged or not base.is_floating_point():
                continue
            want = base + float(alpha) * ((pr[name] - base) + (sid[name] - base)) / 2
            assert torch.allclose(merged[name].float(), want.float(), atol=1e-5), (alpha, name)
            changed += int(not torch.equal(pr[name], sid[name]))
        assert changed > 0  # the two θ′ differ, so the mean is not either one


def test_each_experiment_chooses_its_alpha_on_its_own_dev_score(planned):
    experiments = planned["scores"]["experiments"]
    assert set(experiments) == {"theta_hat", "theta_hat_sid", "theta_hat_multi"}
    for name, record in experiments.items():
        by_alpha = {float(a): s for a, s in record["dev_score_by_alpha"].items()}
        assert set(by_alpha) == {0.25, 1.0}
        best = max(by_alpha.values())
        assert record["alpha"] == min(a for a, s in by_alpha.items() if s == best), name
        assert record["dev_tasks"] == list(TASKS)
    assert experiments["theta_hat"]["alpha"] == planned["scores"]["alpha"]
    # the default experiment's choice is the one the plain smoke run made
    assert experiments["theta_hat"]["dev_score_by_alpha"] == planned["scores"]["dev_score_by_alpha"]
    hats = {r["encoder"]: r["alpha"] for r in planned["rows"] if r["encoder"].startswith("theta_hat")}
    assert hats == {name: rec["alpha"] for name, rec in experiments.items()}


def test_rows_and_p_value_keys(planned):
    from speechft_upstream.evaluate import items, stats

    rows = planned["rows"]
    assert {r["encoder"] for r in rows} == {"fbank", "theta0", "theta_prime", "theta_hat"} | NEW
    assert sorted((r["encoder"], r["task"]) for r in rows) == sorted({(r["encoder"], r["task"]) for r in rows})
    for r in rows:
        assert r["task"] in TASKS
        if r["encoder"] == "fbank":
            continue
        assert len(r["seed_values"]) == 2 and r["ci95"] is not None
        if r["encoder"].startswith("theta_hat"):
            assert 0 < r["p_vs_theta_prime"] <= 1 and 0 < r["p_vs_theta0"] <= 1
        elif r["encoder"] != "theta0":
            assert "p_vs_theta_prime" not in r and 0 < r["p_vs_theta0"] <= 1
    # θ̂_sid's p_vs_theta_prime is against θ′_sid's runs, recomputed from the items
    root = planned["work"] / "evaluate"
    alpha = planned["scores"]["experiments"]["theta_hat_sid"]["alpha"]
    hat = "theta_prime_sid" if alpha == 1.0 else f"sid_alpha{alpha:g}"

    def load(encoder, task):
        records = {s: items.load(root / encoder / task.lower() / "exp" / f"seed{s}" / "items.json") for s in (1, 2)}
        return {s: rec["items"] for s, rec in records.items()}, records[1]["kind"]

    for r in (r for r in rows if r["encoder"] == "theta_hat_sid"):
        if hat == "theta_prime_sid":
            assert r["p_vs_theta_prime"] == 1.0
            continue
        mine, kind = load(hat, r["task"])
        assert r["p_vs_theta_prime"] == pytest.approx(stats.paired_test(mine, load("theta_prime_sid", r["task"])[0],
                                                                        kind)["p"])


def test_paper_table_and_claims(planned):
    md = (planned["out"] / "results.md").read_text()
    table = md[md.index("## The paper's table"):md.index("## Claims")]
    order = [table.index(f"`{name}`") for name in ("theta0", "theta_prime", "theta_hat", "theta_prime_sid",
                                                   "theta_hat_sid", "theta_prime_multi", "theta_hat_multi")]
    assert order == sorted(order)
    assert "| | row | PR PER % ↓ | KS ACC % ↑ | IC ACC % ↑ | score (test) |" in table
    scores = planned["scores"]["scores"]
    assert f"| {scores['theta_hat_multi']:.1f} |" in table
    claims = md[md.index("## Claims"):md.index("## What was measured")].splitlines()
    lines = {line[3]: line for line in claims if line.startswith("- (")}
    assert set(lines) == {"a", "b", "c", "d"}
    for letter, line in lines.items():
        assert sum(s in line for s in ("**held**", "**not held**", "**not resolved**")) == 1, line
    # ER was not in this plan, nor any baseline: the claims that need them say so
    assert "not run: theta_hat_er (use --paper)" in lines["a"]
    assert "not run: theta_prime_l2, theta_prime_lora, theta_prime_early (use --paper)" in lines["c"]
    assert "**not resolved**" in lines["c"] and "**not resolved**" in lines["d"]
    # (a) is decided from the p-values: a significantly worse θ̂ makes it not held (on the experiments
    # run; ER missing leaves the claim itself not resolved)
    rows = planned["rows"]
    by = {(r["encoder"], r["task"]): r for r in rows}
    fine_tuned_on = {"theta_hat": "PR", "theta_hat_sid": "SID"}
    worse = [r for r in rows if fine_tuned_on.get(r["encoder"], r["task"]) != r["task"] and r["p_vs_theta_prime"] < 0.05
             and (r["value"] < by[(r["encoder"].replace("hat", "prime"), r["task"])]["value"]) == r["higher_is_better"]]
    inner = "not held" if worse else "held"
    assert f"On the experiments run (5 comparison(s)): {inner}" in lines["a"], lines["a"]
    assert "On the experiments run (1 comparison(s))" in lines["b"] and "not evaluated here: SID" in lines["b"]


def test_plan_names_and_a_missing_producer_is_an_error(monkeypatch):
    from speechft_upstream.benchmark import plan
    from speechft_upstream.errors import SpeechFTError

    paper = plan.paper_plan()
    assert [e.prime for e in paper] == ["theta_prime", "theta_prime_sid", "theta_prime_er", "theta_prime_multi",
                                        "theta_prime_l2", "theta_prime_lora", "theta_prime_early", "theta_prime_unsup"]
    assert [e.hat for e in paper if e.merged] == ["theta_hat", "theta_hat_sid", "theta_hat_er", "theta_hat_multi",
                                                  "theta_hat_unsup"]
    assert paper[0].alpha_encoder(0.25) == "alpha0.25" and paper[1].alpha_encoder(0.25) == "sid_alpha0.25"
    assert [e.kind for e in plan.default_plan()] == ["finetune", "baseline"]
    monkeypatch.setitem(plan.PRODUCERS, "baseline", "speechft_upstream.benchmark.no_such_module")
    with pytest.raises(SpeechFTError, match="needs speechft_upstream/benchmark/no_such_module.py"):
        plan.resolve(plan.default_plan())
    kept, skipped = plan.resolve(plan.default_plan(), skip_missing=True)
    assert [e.name for e in kept] == ["pr"] and skipped == ["l2"]
    # the counts README.md quotes: full and quick, default and --paper (one unsupervised extra task);
    # the quick size's default plan has no baseline
    assert [e.kind for e in plan.default_plan("PR", with_baseline=False)] == ["finetune"]
    from speechft_upstream.benchmark.sizes import DEFAULT_TASKS, NO_HEAD, SIZES

    with_extra = [plan._with(e, extra_task="PR_X") if e.kind == "unsupervised" else e for e in paper]
    counts = {size: (plan.evaluation_count(plan.default_plan("PR", SIZES[size].get("default_baseline", True)),
                                           DEFAULT_TASKS, SIZES[size]["alphas"],
                                           SIZES[size]["seeds"], NO_HEAD),
                     plan.evaluation_count(with_extra, DEFAULT_TASKS, SIZES[size]["alphas"], SIZES[size]["seeds"],
                                           NO_HEAD)) for size in ("full", "quick")}
    assert counts == {"full": ((30, 90), (105, 315)), "quick": ((20, 60), (79, 237))}


def test_paper_flag_in_help():
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--help"])
    assert_ok(proc)
    assert "--paper" in proc.stdout and "multi-task merge" in proc.stdout


FAKE = textwrap.dedent("""
    import sys
    from speechft_upstream.benchmark import pipeline, plan
    plan.PRODUCERS.update(baseline="tests.fake_producers", unsupervised="tests.fake_producers")
    entries = [plan.default_plan()[0], plan.baseline("l2"), plan.unsupervised()]
    pipeline.run(out=sys.argv[1], work=sys.argv[2], size="smoke", jobs=2, device="cpu", plan=entries)
""")


@pytest.mark.slow
def test_baseline_and_unsupervised_experiments_through_stand_in_producers(planned, tmp_path):
    """The baseline and unsupervised kinds with stand-in producers (tests/fake_producers.py): the
    second language's PR evaluated for FBANK, θ0 and the unsupervised encoders only, from the
    language corpus's folder; its α chosen with that task in the dev score; claims (c) and (d)
    decided from the baseline's rows and analysis."""
    from speechft_upstream.benchmark.experiments import select_alpha
    from speechft_upstream.benchmark import plan

    out = tmp_path / "results"
    proc = run_py(["-c", FAKE, out, planned["work"]], env={"OMP_NUM_THREADS": "1"}, timeout=900, cwd=REPO)
    assert_ok(proc)
    rows = json.loads((out / "results.json").read_text())
    extra = {(r["encoder"], r["task"]) for r in rows if r["task"] == "PR_XX"}
    assert extra == {(e, "PR_XX") for e in ("fbank", "theta0", "theta_prime_unsup_xx", "theta_hat_unsup_xx")}
    evaluate = planned["work"] / "evaluate"
    params = json.loads((evaluate / "theta0" / "pr_xx" / "stage.json").read_text())["params"]
    assert params["data"] == str(planned["work"] / "corpus" / "data" / "pr")
    assert not (evaluate / "theta_prime_l2" / "pr_xx").exists()
    hat = next(r for r in rows if r["encoder"] == "theta_hat_unsup_xx" and r["task"] == "PR_XX")
    assert "p_vs_theta_prime" in hat and "p_vs_theta0" in hat
    l2 = next(r for r in rows if r["encoder"] == "theta_prime_l2" and r["task"] == "PR")
    assert 0 < l2["p_vs_theta0"] <= 1 and "p_vs_theta_prime" not in l2
    record = json.loads((out / "scores.json").read_text())["experiments"]["theta_hat_unsup_xx"]
    assert record["dev_tasks"] == ["PR", "KS", "IC", "PR_XX"]
    # the same choice recomputed from the stage records, with and without the extra task
    evals = {}
    for folder in evaluate.glob("*/*/stage.json"):
        data = json.loads(folder.read_text())
        evals[(data["params"]["encoder"], data["params"]["task"])] = data["outputs"]
    entry = plan.unsupervised()
    entry = plan._with(entry, encoder_name="theta_prime_unsup_xx", extra_task="PR_XX")
    alpha, by_alpha, _ = select_alpha(evals, (0.25, 1.0), entry, ["PR", "KS", "IC"], ("PR_XX",))
    assert record["alpha"] == alpha
    assert record["dev_score_by_alpha"] == {f"{a:g}": s for a, s in by_alpha.items()}
    md = (out / "results.md").read_text()
    assert "PR_XX PER % ↓" in md and (out / "analysis_baselines" / "similarity.json").is_file()
    claims = [line for line in md.splitlines() if line.startswith("- (c)") or line.startswith("- (d)")]
    assert len(claims) == 2 and all("not run: theta_prime_lora, theta_prime_early" in c for c in claims)
    assert "θ′_l2 CKA" in claims[1]
