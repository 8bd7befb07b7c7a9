"""`speechft benchmark --tasks`: the five tasks beyond the default run (ASR, SF, ASV, SD, QbE)
through their real recipes, on the smoke size.

The run shares --work with test_benchmark.py's smoke run (conftest.benchmark_smoke): corpus, θ0,
θ′, merges and the PR evaluations are reused, so only the new tasks' evaluations (4 encoders,
2 seeds, QbE once) cost time here. What is checked: each task's unit in results.json against
the recipes' own results.json, SF's second metric, ASV without a dev value, QbE as one
deterministic run, p-values and CIs null where they cannot be computed, the dev score that
chose α, and `speechft score` agreeing with scores.json.
"""

import importlib.util
import json
import math

import pytest

from tests.conftest import REPO, assert_ok, run_py

ENCODERS = ("fbank", "theta0", "theta_prime", "theta_hat")
if importlib.util.find_spec("speechft_upstream.benchmark.stage_baselines"):  # the default plan's baseline (plan.py)
    ENCODERS += ("theta_prime_l2",)
NEW = ("ASR", "SF", "ASV", "SD", "QBE")
METRICS = {"PR": ["PER"], "ASR": ["WER"], "SF": ["F1", "CER"], "ASV": ["EER"], "SD": ["DER"], "QBE": ["MTWV"]}
MINI_REFS = REPO / "speechft_upstream" / "evaluate" / "mini_superb_references.yaml"


@pytest.fixture(scope="module")
def more(benchmark_smoke, tmp_path_factory):
    import time

    out = tmp_path_factory.mktemp("benchmark_tasks") / "results"
    started = time.time()
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--tasks", "pr,asr,sf,asv,sd,qbe",
                   "--out", out, "--work", benchmark_smoke["work"]], env={"OMP_NUM_THREADS": "1"}, timeout=900)
    seconds = time.time() - started
    assert_ok(proc)
    rows = json.loads((out / "results.json").read_text())
    return {"out": out, "work": benchmark_smoke["work"] / "smoke", "proc": proc, "rows": rows, "seconds": seconds,
            "scores": json.loads((out / "scores.json").read_text())}


def _row(rows, encoder, task, metric):
    found = [r for r in rows if (r["encoder"], r["task"], r["metric"]) == (encoder, task, metric)]
    assert len(found) == 1, (encoder, task, metric)
    return found[0]


def _recipe_results(more, encoder, task):
    """The recipes' own results.json of one evaluation (θ̂ is the chosen α's runs)."""
    if encoder == "theta_hat":
        alpha = more["scores"]["alpha"]
        encoder = "theta_prime" if alpha == 1.0 else f"alpha{alpha:g}"
    exp = more["work"] / "evaluate" / encoder / task.lower() / "exp"
    if task == "QBE":
        return [json.loads((exp / "results.json").read_text())]
    return [json.loads((exp / f"seed{s}" / "results.json").read_text()) for s in (1, 2)]


@pytest.mark.slow  # the suite's time: its fixture adds five tasks to the smoke run (110 s); each recipe's evaluate stays in test_recipes*.py / test_sf_asv.py
def test_stages_reused_and_only_new_tasks_run(more):
    err = more["proc"].stderr
    for stage in ("corpus", "theta0", "finetune_pr", "merge"):
        assert f"reusing {more['work'] / stage}" in err, stage
    assert "PR   dev" not in err  # no PR evaluation ran again (FBANK, θ0, θ̂_0.25, θ′)
    assert f"reusing {len(ENCODERS) * 6} finished evaluation(s)" in err  # the encoders × 6 tasks at the end
    for task in NEW:
        assert f"θ0 {task:<4} dev" in err, task
    print(f"\n[benchmark --tasks PR,ASR,SF,ASV,SD,QBE after the smoke run: {more['seconds']:.0f} s]")


@pytest.mark.slow  # the suite's time: its fixture adds five tasks to the smoke run (110 s); each recipe's evaluate stays in test_recipes*.py / test_sf_asv.py
def test_rows_units_and_values_match_the_recipes(more):
    rows = more["rows"]
    expected = sorted((e, t, m) for e in ENCODERS for t, ms in METRICS.items() for m in ms)
    assert sorted((r["encoder"], r["task"], r["metric"]) for r in rows) == expected
    for encoder in ENCODERS:
        for task in NEW:
            runs = _recipe_results(more, encoder, task)
            row = _row(rows, encoder, task, METRICS[task][0])
            assert row["split"] == "test" and math.isfinite(row["value"])
            raw = sum(r["value"] for r in runs) / len(runs)
            # ASV's EER and SF's F1 are fractions in the recipe, percent here; ASR's WER and SD's DER
            # are percent already; QbE's MTWV stays a fraction (speechft score refuses one above 1)
            scale = {"ASR": 1, "SF": 100, "ASV": 100, "SD": 1, "QBE": 1}[task]
            assert row["value"] == pytest.approx(scale * raw, abs=1e-3), (encoder, task)
            assert row["unit"] == ("fraction" if task == "QBE" else "%")
            assert row["higher_is_better"] is (task in ("SF", "QBE"))
            if task == "SF":
                cer = _row(rows, encoder, "SF", "CER")
                mean_cer = sum(r["metrics"]["slot_value_cer"] for r in runs) / len(runs)
                assert cer["value"] == pytest.approx(100 * mean_cer, abs=1e-3)
                assert cer["higher_is_better"] is False and cer["main_metric"] == "F1"
                assert row["metrics"] == cer["metrics"] == {"F1": row["value"], "CER": cer["value"]}
                assert len(cer["seed_values"]) == 2 and cer["dev_value"] is not None
    qbe = _row(rows, "theta0", "QBE", "MTWV")
    assert 0.0 <= qbe["value"] <= 1.0


@pytest.mark.slow  # the suite's time: its fixture adds five tasks to the smoke run (110 s); each recipe's evaluate stays in test_recipes*.py / test_sf_asv.py
def test_dev_values_seeds_and_missing_statistics(more):
    rows = more["rows"]
    for encoder in ENCODERS:
        asv = _row(rows, encoder, "ASV", "EER")  # SUPERB has no ASV dev split
        assert asv["dev_value"] is None and asv["dev_seed_values"] == [None, None]
        sd = _row(rows, encoder, "SD", "DER")  # the expert's dev DER (a fraction) in percent
        assert 0.0 <= sd["dev_value"] <= 100.0 and len(sd["seed_values"]) == 2 and sd["ci95"] is not None
        asr = _row(rows, encoder, "ASR", "WER")
        assert asr["dev_value"] >= 0 and asr["seeds"] == [1, 2]
        qbe = _row(rows, encoder, "QBE", "MTWV")  # one deterministic DTW run: no seed spread, no CI
        assert qbe["deterministic"] is True and qbe["seeds"] == [1] and len(qbe["seed_values"]) == 1
        assert qbe["ci95"] is None and qbe["value"] == qbe["seed_values"][0]
        # results.json rounds to 4 decimals in the report's unit (MTWV stays a fraction)
        assert qbe["dev_value"] == pytest.approx(_recipe_results(more, encoder, "QBE")[0]["metrics"]["dev_mtwv"],
                                                 abs=5e-5)
    same = more["scores"]["alpha"] == 1.0  # θ̂ is θ′: the same runs, p = 1 without a test
    for task in NEW:  # none of the five leaves per-item outcomes: no paired test, null, not a number
        for metric in METRICS[task]:
            hat = _row(rows, "theta_hat", task, metric)
            assert hat["p_vs_theta0"] is None and hat["p_vs_theta_prime"] == (1.0 if same else None)
            assert _row(rows, "theta_prime", task, metric)["p_vs_theta0"] is None
    assert _row(rows, "theta_hat", "PR", "PER")["p_vs_theta0"] is not None
    md = (more["out"] / "results.md").read_text()
    assert "n/a: no p-value could be computed" in md and "No 95 % CI for QBE: one run" in md
    assert "ASV left out: no dev split" in md
    head = "| encoder | PR PER % ↓ | ASR WER % ↓ | SF F1 % ↑ | SF CER % ↓ | ASV EER % ↓ | SD DER % ↓ | QBE MTWV ↑ |"
    assert head in (more["out"] / "summary.txt").read_text()
    run = json.loads((more["out"] / "run.json").read_text())
    assert run["settings"]["evaluate"]["QBE"] == {"dtw": True, "layer": "all", "seeds": [1]}
    assert set(run["settings"]["evaluate"]) == set(METRICS)


@pytest.mark.slow  # the suite's time: its fixture adds five tasks to the smoke run (110 s); each recipe's evaluate stays in test_recipes*.py / test_sf_asv.py
def test_dev_score_that_chose_alpha(more):
    """Recomputed from alpha_sweep.json and FBANK's dev values: main metrics only, ASV left out."""
    from speechft_upstream.benchmark.pipeline import selection_references
    from speechft_upstream.evaluate import score

    sweep = json.loads((more["out"] / "alpha_sweep.json").read_text())
    main = {t: ms[0] for t, ms in METRICS.items()}
    dev = [{"encoder": r["encoder"], "task": r["task"], "metric": r["metric"], "value": r["dev"], "split": "dev"}
           for r in sweep if r["task"] != "ASV" and r["metric"] == main[r["task"]]]
    dev += [{"encoder": "fbank", "task": r["task"], "metric": r["metric"], "value": r["dev_value"], "split": "dev"}
            for r in more["rows"] if r["encoder"] == "fbank" and r["task"] != "ASV" and r["metric"] == main[r["task"]]]
    refs = selection_references(score.load_references(MINI_REFS))
    assert set(refs["tasks"]["SF"]) == {"F1"}
    scores = score.compute(dev, refs, split="dev", baseline_encoder="fbank")
    by_alpha = more["scores"]["dev_score_by_alpha"]
    # alpha_sweep.json holds values rounded to 4 decimals; on QbE's fraction scale that moves the
    # dev score by up to 1000 / tasks × 5e-5 / (perfect − FBANK dev), a few hundredths here
    assert by_alpha["0.25"] == pytest.approx(scores["alpha0.25"]["score"], abs=0.05)
    assert by_alpha["1"] == pytest.approx(scores["theta_prime"]["score"], abs=0.05)
    assert set(scores["theta0"]["tasks"]) == {"PR", "ASR", "SF", "SD", "QbE"}
    best = max(by_alpha, key=lambda a: (by_alpha[a], -float(a)))
    assert float(best) == more["scores"]["alpha"]


@pytest.mark.slow  # the suite's time: its fixture adds five tasks to the smoke run (110 s); each recipe's evaluate stays in test_recipes*.py / test_sf_asv.py
def test_scores_match_speechft_score(more):
    proc = run_py(["-m", "speechft_upstream.cli", "score", more["out"] / "results.json", "--references", MINI_REFS])
    assert_ok(proc)
    scores = more["scores"]["scores"]
    for encoder, value in scores.items():
        assert any(line.startswith(encoder) and f"{value:.2f}" in line and "6 tasks" in line
                   for line in proc.stdout.splitlines()), (encoder, proc.stdout)
    # SF's score averages F1 and CER, as SUPERB's does
    assert set(more["scores"]["detail"]["theta0"]["tasks"]["SF"]["metrics"]) == {"F1", "CER"}


def test_tasks_all_and_bad_names():
    from speechft_upstream.benchmark import sizes

    assert sizes.parse_tasks("all") == ["PR", "ASR", "KS", "QBE", "SID", "ASV", "SD", "ER", "IC", "SF"]
    assert sizes.parse_tasks(" pr, QbE ") == ["PR", "QBE"]
    assert list(sizes.DEFAULT_TASKS) == ["PR", "SID", "KS", "IC", "ER"]
    for size in ("full", "quick", "smoke"):
        assert set(sizes.SIZES[size]["eval"]) == set(sizes.TASKS)
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--tasks", "PR,XYZ", "--work", "/nonexistent"])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("speechft: error: tasks must include PR and come from "
                                                           "PR, ASR, KS, QBE, SID, ASV, SD, ER, IC, SF (or be 'all')")


@pytest.mark.slow
def test_all_ten_tasks(benchmark_smoke, tmp_path):
    """--tasks all on the smoke size (the five default tasks' runs of the smoke fixture are reused)."""
    out = tmp_path / "results"
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--tasks", "all", "--out", out,
                   "--work", benchmark_smoke["work"]], env={"OMP_NUM_THREADS": "1"}, timeout=1800)
    assert_ok(proc)
    rows = json.loads((out / "results.json").read_text())
    assert {r["task"] for r in rows} == {"PR", "ASR", "KS", "QBE", "SID", "ASV", "SD", "ER", "IC", "SF"}
    assert len(rows) == 4 * 11  # ten tasks, SF twice
    score = run_py(["-m", "speechft_upstream.cli", "score", out / "results.json", "--references", MINI_REFS])
    assert_ok(score)
    for encoder, value in json.loads((out / "scores.json").read_text())["scores"].items():
        assert any(line.startswith(encoder) and f"{value:.2f}" in line and "10 tasks" in line
                   for line in score.stdout.splitlines())
