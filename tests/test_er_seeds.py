"""ER as SUPERB runs it, with seeds: `er.sh evaluate --seeds` without --fold runs every fold for
every seed; EXP/results.json is the mean over seeds of each seed's five-fold mean. The corpus is a
five-session IEMOCAP tree written here (real wavs) and prepared by prepare/iemocap.py."""

import json
import subprocess
import sys

import pytest

from tests.test_recipes import RECIPES, SMOKE, ok, recipe
from tests.test_recipes_paper import make_iemocap, run_prepare

FOLDS = [f"fold{n}" for n in range(1, 6)]


def accuracy(run, fold):
    """The run's test accuracy from s3prl's own prediction and truth files."""
    predicted = dict(line.split() for line in (run / f"test_{fold}_predict.txt").read_text().splitlines())
    truth = dict(line.split() for line in (run / f"test_{fold}_truth.txt").read_text().splitlines())
    assert truth and set(predicted) == set(truth)
    return sum(predicted[name] == label for name, label in truth.items()) / len(truth)


@pytest.mark.slow  # the suite's time (42 s): test_benchmark_er_folds.py runs er.sh evaluate on five sessions with seeds too
def test_er_all_folds_with_seeds(tmp_path, tiny_hubert):
    root = make_iemocap(tmp_path / "iemocap")
    ok(run_prepare("iemocap.py", root))
    exp = tmp_path / "er"
    proc = ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, "--seeds", "1,2,3", *SMOKE))
    results = json.loads((exp / "results.json").read_text())
    by_hand = {}
    for seed in ("1", "2", "3"):
        for n, fold in enumerate(FOLDS, 1):
            run = exp / fold / f"seed{seed}"
            row = json.loads((run / "results.json").read_text())
            assert row["fold"] == fold and row["seed"] == seed
            assert row["value"] == pytest.approx(accuracy(run, fold))
            names = (run / f"test_{fold}_truth.txt").read_text().split()[::2]
            assert all(name.startswith(f"Ses0{n}") for name in names)  # the held-out session
            by_hand[seed, fold] = row["value"]
        per_seed = json.loads((exp / f"seed{seed}" / "results.json").read_text())
        assert per_seed["seed"] == seed and per_seed["fold"] == "mean"
        assert per_seed["folds"] == {fold: by_hand[seed, fold] for fold in FOLDS}
        assert per_seed["value"] == pytest.approx(sum(by_hand[seed, fold] for fold in FOLDS) / 5)
        assert results["seeds"][seed] == per_seed["value"]
        assert results["seed_folds"][seed] == per_seed["folds"]
    assert results["value"] == pytest.approx(sum(by_hand.values()) / 15)
    assert results["folds"] == pytest.approx({f: sum(by_hand[s, f] for s in "123") / 3 for f in FOLDS})
    assert results["task"] == "er" and results["fold"] == "mean" and "seed" not in results
    assert proc.stderr.count("evaluate: training seed(s) 1 2 3") == 5  # one runner process per fold
    assert "mean over 3 seed(s) of the mean test acc of 5 folds" in proc.stderr
    # a rerun keeps the folds whose every seed finished and runs the others
    (exp / "results.json").unlink()
    (exp / "fold3" / "seed2" / "results.json").unlink()
    for ckpt in (exp / "fold3").glob("seed*/*.ckpt"):
        ckpt.unlink()
    proc = ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, "--seeds", "1,2,3", *SMOKE))
    assert proc.stderr.count("done before") == 4 and "fold3 of 5" in proc.stderr
    assert json.loads((exp / "results.json").read_text())["seed_folds"]["1"]["fold1"] == by_hand["1", "fold1"]


def test_fold_seeds_mean(tmp_path):
    """recipe_tool.py fold-seeds on hand-made per-seed fold means."""
    values = {"1": [0.5, 0.25, 1.0, 0.0, 0.75], "2": [0.25, 0.25, 0.5, 0.5, 1.0]}  # means 0.5 and 0.5
    values["7"] = [0.0, 0.0, 0.0, 0.0, 1.0]  # mean 0.2
    paths = []
    for seed, folds in values.items():
        row = {"task": "er", "metric": "acc", "split": "test", "encoder_ckpt": "/m.pt", "upstream": "speechft_hubert",
               "seed": seed, "fold": "mean", "value": sum(folds) / 5, "folds": dict(zip(FOLDS, folds))}
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(row))
    tool = [sys.executable, str(RECIPES / "recipe_tool.py"), "fold-seeds", "--output", str(tmp_path / "out.json")]
    ok(subprocess.run([*tool, *map(str, paths)], text=True, capture_output=True))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["value"] == pytest.approx((0.5 + 0.5 + 0.2) / 3)  # 0.4
    assert out["seeds"] == {"1": 0.5, "2": 0.5, "7": pytest.approx(0.2)}
    assert out["folds"]["fold5"] == pytest.approx((0.75 + 1.0 + 1.0) / 3)
    assert out["seed_folds"]["2"]["fold3"] == 0.5 and "seed" not in out
    bad = json.loads(paths[1].read_text()) | {"upstream": "fbank"}
    paths[1].write_text(json.dumps(bad))
    proc = subprocess.run([*tool, *map(str, paths)], text=True, capture_output=True)
    assert proc.returncode == 1 and "seed2.json: upstream 'fbank' differs" in proc.stderr
    assert proc.stderr.startswith("speechft: error:")
