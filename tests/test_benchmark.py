"""`speechft benchmark`: the mini-SUPERB pipeline end to end on its smallest setting.

The hidden ``--smoke`` size: a tiny eSpeak NG corpus, a random tiny θ0 (make-tiny), 4 fine-tuning
steps, 3 steps per evaluation, PR, KS and IC, α in {0.25, 1}. About 2.5 minutes on 2 cores.
"""

import csv
import json
import time

import pytest

from tests.conftest import REPO, assert_ok, run_py

ENCODERS = {"fbank", "theta0", "theta_prime", "theta_hat"}
TASKS = {"PR", "KS", "IC"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark")
    out, work = root / "results", root / "work"
    args = ["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--out", out, "--work", work]
    env = {"OMP_NUM_THREADS": "1"}
    started = time.time()
    first = run_py(args, env=env, timeout=900)
    first_seconds = time.time() - started
    assert_ok(first)
    started = time.time()
    second = run_py(args, env=env, timeout=300)
    second_seconds = time.time() - started
    assert_ok(second)
    return {"out": out, "work": work, "first": first, "second": second,
            "first_seconds": first_seconds, "second_seconds": second_seconds}


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
    reran = [line for line in proc.stderr.splitlines() if "in the background] " in line or "evaluation run(s)" in line]
    assert len(reran) == 1 and "θ0 KS" in reran[0], reran  # FBANK and θ0 runs go in the background
    assert f"reusing {len(ENCODERS) * len(TASKS)} finished evaluation(s)" in proc.stderr
    assert json.loads(marker.read_text())["key"] != "stale"


def test_bad_options_are_one_line_errors(tmp_path):
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--tasks", "KS", "--work", tmp_path])
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("speechft: error: tasks must include PR")
