"""The benchmark's ER evaluation as SUPERB runs it: on a five-session IEMOCAP tree, `er.sh
evaluate` without --fold (five leave-one-session-out folds, two seeds); on the mini corpus's one
session, --fold fold1 with the stage key as before (existing caches stay valid).

stage_evaluations.stage_evaluate on the real recipe and runner at smoke budgets, a tiny random HuBERT."""

import json
import re

import pytest

from speechft_upstream.benchmark import er_folds
from speechft_upstream.benchmark import stage_evaluations as stages
from speechft_upstream.benchmark.sizes import eval_budget
from speechft_upstream.benchmark.stage import stage_key
from tests.test_recipes import ok
from tests.test_recipes_paper import make_iemocap, run_prepare

FOLDS = [f"fold{n}" for n in range(1, 6)]


def _encoder(tiny_hubert):
    return {"name": "theta0", "path": str(tiny_hubert), "key": "tiny-theta0"}


def _dev_best(log):
    """The best dev accuracy of a fold's train.log, read here with a pattern of this test's own."""
    values = [float(v) for v in re.findall(r"\bdev acc: ([0-9.eE+-]+)", log.read_text())]
    assert values, log
    return max(values)


def _old_params(encoder, corpus_info):
    """What stage_evaluate keyed an ER evaluation on before the five folds (fold 1 always)."""
    return {"encoder": encoder["name"], "encoder_key": encoder["key"], "task": "ER", **eval_budget("smoke", "ER"),
            "device": "cpu", "corpus_key": stage_key(corpus_info)}


@pytest.fixture
def commands(monkeypatch):
    """Every command the evaluations run, recorded, then run for real."""
    seen, real = [], stages.run_cmd
    monkeypatch.setattr(stages, "run_cmd", lambda cmd, **kw: (seen.append([str(c) for c in cmd]), real(cmd, **kw)))
    return seen


def test_five_sessions_run_every_fold_for_every_seed(tmp_path, tiny_hubert, commands):
    data = tmp_path / "superb"
    ok(run_prepare("iemocap.py", make_iemocap(data / "er")))
    assert er_folds.folds_of(data / "er") == FOLDS
    corpus_info = {"dir": str(data)}
    work, encoder = tmp_path / "work", _encoder(tiny_hubert)
    results = stages.stage_evaluate(work, "smoke", corpus_info, [encoder], "cpu", 1, ["ER"])
    out = results[("theta0", "ER")]
    assert len(commands) == 1 and "--fold" not in commands[0] and "--seeds" in commands[0]
    folder = work / "evaluate" / "theta0" / "er"
    marker = json.loads((folder / "stage.json").read_text())
    assert marker["params"]["folds"] == FOLDS and marker["outputs"]["folds"] == FOLDS and out["folds"] == FOLDS
    run_log = (folder / "run.log").read_text()
    assert all(f"evaluate: {fold} of 5" in run_log for fold in FOLDS)
    exp = folder / "exp"
    assert not list(exp.rglob("*.ckpt"))  # every fold's runner checkpoints deleted
    assert sorted(out["seeds"]) == ["1", "2"]
    tests, devs = [], []
    for seed in ("1", "2"):
        run = out["seeds"][seed]
        fold_values, fold_devs = {}, {}
        for n, fold in enumerate(FOLDS, 1):
            run_dir = exp / fold / f"seed{seed}"
            row = json.loads((run_dir / "results.json").read_text())
            assert row["fold"] == fold and row["seed"] == seed
            fold_values[fold] = row["value"]
            fold_devs[fold] = _dev_best(run_dir / "train.log")
        assert run["test"] == pytest.approx(sum(fold_values.values()) / 5)
        assert run["dev"] == pytest.approx(sum(fold_devs.values()) / 5)
        assert run["folds"] == {f: {"test": fold_values[f], "dev": pytest.approx(fold_devs[f])} for f in FOLDS}
        assert set(run["steps_run"]) == set(run["checkpoint_step"]) == set(FOLDS)
        assert all(isinstance(run["steps_run"][f], int) for f in FOLDS)
        assert run["timing"]["train"]["folds"] == 5
        tests.append(run["test"])
        devs.append(run["dev"])
        # one items file per seed: every fold's test items, ids prefixed by the fold
        for name in ("items", "dev_items"):
            path = folder / f"{name}_seed{seed}.json"
            assert out[name][seed] == str(path)
            combined = json.loads(path.read_text())
            expected = {}
            for fold in FOLDS:
                record = json.loads((exp / fold / f"seed{seed}" / f"{name}.json").read_text())
                assert record["items"]
                expected |= {f"{fold}/{key}": outcome for key, outcome in record["items"].items()}
            assert combined["items"] == expected and combined["folds"] == FOLDS
            assert combined["kind"] == "accuracy"
            assert combined["value"] == pytest.approx(sum(expected.values()) / len(expected))
        test_ids = json.loads((folder / f"items_seed{seed}.json").read_text())["items"]
        for n, fold in enumerate(FOLDS, 1):  # each fold tests its held-out session
            names = [key.split("/", 1)[1] for key in test_ids if key.startswith(f"{fold}/")]
            assert names and all(name.startswith(f"Ses0{n}") for name in names)
    assert out["test"] == pytest.approx(sum(tests) / 2) and out["dev"] == pytest.approx(sum(devs) / 2)
    assert out["test"] == pytest.approx(json.loads((exp / "results.json").read_text())["value"])
    # the report counts one runner per fold and seed, and says that ER is the folds' mean
    from speechft_upstream.benchmark import provenance, report

    assert provenance.evaluation_cost({("theta0", "ER"): out})["runs"] == 2 * len(FOLDS)
    assert "mean of 5 leave-one-session-out folds" in report._folds_note({("theta0", "ER"): out}, "ER")
    assert report._folds_note({("theta0", "ER"): {**out, "folds": ["fold1"]}}, "ER") == ""
    # the summary's readers take the combined files as they take any task's
    from speechft_upstream.benchmark import summary

    by_seed, kind = summary.load_items(out)
    assert kind == "accuracy" and sorted(by_seed) == ["1", "2"] and len(by_seed["1"]) == len(test_ids)
    # a second run reuses the stage: its files are all there
    again = stages.stage_evaluate(work, "smoke", corpus_info, [encoder], "cpu", 1, ["ER"])
    assert again[("theta0", "ER")]["_reused"] and len(commands) == 1


def test_one_session_keeps_fold1_and_the_cache_key(tmp_path, tiny_hubert, commands):
    data = tmp_path / "mini"
    ok(run_prepare("iemocap.py", make_iemocap(data / "er")))
    for n in range(2, 6):  # what the mini corpus's ER folder has: Session1's meta data only
        for path in (data / "er" / "meta_data" / f"Session{n}").glob("*.json"):
            path.unlink()
    assert er_folds.folds_of(data / "er") == ["fold1"]
    corpus_info, encoder, work = {"dir": str(data)}, _encoder(tiny_hubert), tmp_path / "work"
    out = stages.stage_evaluate(work, "smoke", corpus_info, [encoder], "cpu", 1, ["ER"])[("theta0", "ER")]
    assert len(commands) == 1 and commands[0][commands[0].index("--fold") + 1] == "fold1"
    folder = work / "evaluate" / "theta0" / "er"
    # the key of the one-session case is what it was: stages finished before are reused
    marker = json.loads((folder / "stage.json").read_text())
    assert marker["key"] == stage_key(_old_params(encoder, corpus_info)) and "folds" not in marker["params"]
    assert out["folds"] == ["fold1"] and not list(folder.rglob("*.ckpt"))
    for seed in ("1", "2"):
        run_dir = folder / "exp" / f"seed{seed}"
        row = json.loads((run_dir / "results.json").read_text())
        assert row["fold"] == "fold1" and out["seeds"][seed]["test"] == row["value"]
        assert out["seeds"][seed]["dev"] == pytest.approx(_dev_best(run_dir / "train.log"))
        assert isinstance(out["seeds"][seed]["steps_run"], int)
        assert out["items"][seed] == str(run_dir / "items.json")
        assert out["dev_items"][seed] == str(run_dir / "dev_items.json")
    # the command line of a five-fold evaluation has no --fold; fold 1's ends as today's
    args = ("ER", "evaluate", data / "er", tmp_path / "e", 4, 2, 1e-3)
    assert "--fold" not in stages.recipe_cmd(*args, fold=None)
    assert stages.recipe_cmd(*args)[-2:] == ["--fold", "fold1"]
