"""`speechft benchmark`: the mini-SUPERB pipeline end to end on its smallest setting.

The hidden ``--smoke`` size: a tiny eSpeak NG corpus, a random tiny θ0 (make-tiny), 4 fine-tuning
steps, at most 4 head steps per evaluation with a dev pass every 2 and patience 1, two seeds, PR,
KS and IC, α in {0.25, 1}. It goes through the seeds, CI and p-value code paths and run.json.
"""

import csv
import hashlib
import importlib.util
import json
import re

import pytest

from tests.conftest import REPO, assert_ok, run_py

ENCODERS = {"fbank", "theta0", "theta_prime", "theta_hat"}
if importlib.util.find_spec("speechft_upstream.benchmark.stage_baselines"):  # the default plan's baseline (plan.py)
    ENCODERS.add("theta_prime_l2")
TASKS = {"PR", "KS", "IC"}


@pytest.fixture(scope="module")
def smoke(benchmark_smoke):  # conftest.py: shared with test_benchmark_tasks.py, which reuses its stages
    return benchmark_smoke


def test_results_files_hold_one_row_per_encoder_and_task(smoke):
    out = smoke["out"]
    for name in ("results.md", "results.csv", "results.json", "scores.json", "alpha_sweep.csv",
                 "alpha_sweep.png", "bars.png", "analysis/similarity.md", "analysis/similarity.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = json.loads((out / "results.json").read_text())
    keys = [(r["encoder"], r["task"]) for r in rows]
    assert sorted(keys) == sorted((e, t) for e in ENCODERS for t in TASKS)
    for r in rows:
        assert r["split"] == "test" and r["metric"] in ("PER", "ACC")
        assert isinstance(r["value"], float) and isinstance(r["dev_value"], float)
        assert r["seeds"] == [1, 2] and len(r["seed_values"]) == 2
        assert r["value"] == pytest.approx(sum(r["seed_values"]) / 2, abs=1e-3)  # value is the mean
        low, high = r["ci95"]
        assert low <= r["value"] <= high
        # the t-interval of two values: mean ± t(0.975, 1) · |a − b| / 2
        half = 12.7062 * abs(r["seed_values"][0] - r["seed_values"][1]) / 2
        assert (high - low) / 2 == pytest.approx(half, abs=1e-3)
        if r["encoder"] == "theta_hat":
            assert 0 < r["p_vs_theta_prime"] <= 1 and 0 < r["p_vs_theta0"] <= 1
        else:
            assert "p_vs_theta_prime" not in r
    with open(out / "results.csv", newline="") as handle:
        assert sorted((r["encoder"], r["task"]) for r in csv.DictReader(handle)) == sorted(keys)
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["scores"]) == ENCODERS and scores["scores"]["fbank"] == 0.0
    assert scores["alpha"] in (0.25, 1.0) and set(scores["dev_score_by_alpha"]) == {"0.25", "1"}
    hat = [r for r in rows if r["encoder"] == "theta_hat"]
    assert {r["alpha"] for r in hat} == {scores["alpha"]}
    md = (out / "results.md").read_text()
    assert "| θ′ |" in md and "α chosen on dev" in md
    # the report's table is printed at the end
    assert "| encoder | PR PER % ↓ | KS ACC % ↑ | IC ACC % ↑ | score (test) |" in smoke["first"].stdout


def test_p_values_recomputed_from_the_items(smoke):
    """The θ̂ p-values are the paired tests of the per-seed items the evaluation runs left."""
    from speechft_upstream.evaluate import items, stats

    rows = json.loads((smoke["out"] / "results.json").read_text())
    scores = json.loads((smoke["out"] / "scores.json").read_text())
    hat = "theta_prime" if scores["alpha"] == 1.0 else f"alpha{scores['alpha']:g}"
    root = smoke["work"] / "smoke" / "evaluate"
    for r in (r for r in rows if r["encoder"] == "theta_hat"):
        def load(encoder):
            records = {s: items.load(root / encoder / r["task"].lower() / "exp" / f"seed{s}" / "items.json")
                       for s in (1, 2)}
            return {s: rec["items"] for s, rec in records.items()}, records[1]["kind"]

        mine, kind = load(hat)
        assert kind == ("error_rate" if r["task"] == "PR" else "accuracy")
        for other in ("theta_prime", "theta0"):
            if other == hat:
                assert r[f"p_vs_{other}"] == 1.0
                continue
            expected = stats.paired_test(mine, load(other)[0], kind)["p"]
            assert r[f"p_vs_{other}"] == pytest.approx(expected), (r["task"], other)


def test_run_json_names_versions_settings_seeds_times_and_inputs(smoke):
    run = json.loads((smoke["out"] / "run.json").read_text())
    for key in ("speechft", "libraries", "settings", "seeds", "stage_times", "corpus", "theta0", "theta_prime",
                "theta_hat", "determinism", "nondeterministic_stages", "evaluation_cost_cpu_seconds"):
        assert key in run, key
    assert run["speechft"]["version"] and run["libraries"]["torch"] and run["libraries"]["s3prl"] == "0.4.18"
    assert run["seeds"]["evaluation"] == [1, 2]
    assert set(run["settings"]["evaluate"]) == TASKS and run["settings"]["threads_per_run"]["OMP_NUM_THREADS"] == "1"
    for name in ("theta0", "theta_prime", "theta_hat"):
        path = run[name]["path"]
        assert len(run[name]["sha256"]) == 64
        assert hashlib.sha256(open(path, "rb").read()).hexdigest() == run[name]["sha256"]
    assert (smoke["work"] / "smoke" / "corpus" / "data").resolve() == __import__("pathlib").Path(run["corpus"]["path"])
    assert len(run["corpus"]["sha256"]) == 64 and run["corpus"]["files"] > 50
    assert set(run["stage_times"]) >= {"corpus", "theta0", "finetune", "merge", "evaluate", "analyze"}
    cost = run["evaluation_cost_cpu_seconds"]
    assert cost["runs"] == len(ENCODERS) * len(TASKS) * 2 and cost["startup"] > 0 and cost["steps"] > 0


def test_scores_match_speechft_score(smoke):
    proc = run_py(["-m", "speechft_upstream.cli", "score", smoke["out"] / "results.json", "--references",
                   REPO / "speechft_upstream" / "evaluate" / "mini_superb_references.yaml"])
    assert_ok(proc)
    scores = json.loads((smoke["out"] / "scores.json").read_text())["scores"]
    for encoder, value in scores.items():
        assert any(line.startswith(encoder) and f"{value:.2f}" in line for line in proc.stdout.splitlines()), \
            (encoder, proc.stdout)


def test_second_run_reuses_every_stage(smoke):
    err = smoke["second"].stderr
    for stage in ("corpus", "theta0", "finetune_pr", "merge", "analyze"):
        assert f"reusing {smoke['work'] / 'smoke' / stage}" in err, stage
    assert f"reusing {len(ENCODERS) * len(TASKS)} finished evaluation(s)" in err  # FBANK, θ0, θ̂_0.25, θ′
    assert "evaluation run(s)" not in err and "in the background]" not in err  # nothing was trained again
    assert smoke["second_seconds"] < 30 and smoke["second_seconds"] < smoke["first_seconds"] / 4


def test_changed_settings_redo_only_what_depends_on_them(smoke, tmp_path):
    """A stage whose parameters differ is redone: one evaluation's key made stale, the rest is reused."""
    marker = smoke["work"] / "smoke" / "evaluate" / "theta0" / "ks" / "stage.json"
    data = json.loads(marker.read_text())
    data["key"] = "stale"
    marker.write_text(json.dumps(data))
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--out", tmp_path / "r", "--work",
                   smoke["work"]], env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert_ok(proc)
    # θ0's runs start in the background; stage 5 takes over those not yet started (stage_evaluations.Handoff),
    # so the one stale run is either a background line or stage 5's only run
    lines = proc.stderr.splitlines()
    background = [line for line in lines if "in the background] " in line]
    counts = [int(m.group(1)) for line in lines for m in [re.search(r"^(\d+) evaluation run\(s\)", line.strip())] if m]
    assert len(background) + sum(counts) == 1, (background, counts)
    assert [line for line in lines if re.search(r"θ0 KS\s+dev .* test ", line)], lines
    assert f"reusing {len(ENCODERS) * len(TASKS)} finished evaluation(s)" in proc.stderr
    assert json.loads(marker.read_text())["key"] != "stale"


def test_bad_options_are_one_line_errors(tmp_path):
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--tasks", "KS", "--work", tmp_path])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("speechft: error: tasks must include PR")
