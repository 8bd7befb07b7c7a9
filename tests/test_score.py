"""speechft score: the SUPERB score formula on hand-computed cases, and its refusals."""

import json

import pytest

from speechft_upstream import cli
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate import score

REFS = """
name: hand
tasks:
  KS:
    ACC: {fbank: 40.0, sota: 90.0}
  PR:
    PER: {fbank: 80.0, sota: 5.0}
  SF:
    F1: {fbank: 70.0, sota: 90.0}
    CER: {fbank: 50.0, sota: 20.0}
"""


def rows(encoder, split="test", **values):
    out = []
    for key, value in values.items():
        task, metric = key.split("_")
        out.append({"encoder": encoder, "task": task, "metric": metric, "value": value, "split": split})
    return out


@pytest.fixture
def refs(tmp_path):
    path = tmp_path / "refs.yaml"
    path.write_text(REFS)
    return path


def write(tmp_path, data, name="results.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_hand_computed(tmp_path, refs):
    data = rows("a", KS_ACC=65.0, PR_PER=20.0, SF_F1=80.0, SF_CER=35.0) + rows("a", split="dev", KS_ACC=0.0)
    scores, _ = score.run(write(tmp_path, data), refs)
    # KS: (65−40)/(90−40) = 0.5; PR (error rate): (20−80)/(5−80) = 0.8;
    # SF: mean of F1 (80−70)/(90−70) = 0.5 and CER (35−50)/(20−50) = 0.5 → 0.5
    assert scores["a"]["tasks"]["KS"]["normalised"] == pytest.approx(0.5)
    assert scores["a"]["tasks"]["PR"]["normalised"] == pytest.approx(0.8)
    assert scores["a"]["tasks"]["SF"]["normalised"] == pytest.approx(0.5)
    assert scores["a"]["score"] == pytest.approx(1000 * (0.5 + 0.8 + 0.5) / 3)  # 600


def test_error_rate_direction_and_endpoints(tmp_path, refs):
    data = (rows("fbank_like", PR_PER=80.0) + rows("sota_like", PR_PER=5.0) + rows("better", PR_PER=1.25)
            + rows("worse", PR_PER=95.0))
    scores, _ = score.run(write(tmp_path, data), refs)
    assert scores["fbank_like"]["score"] == pytest.approx(0.0)
    assert scores["sota_like"]["score"] == pytest.approx(1000.0)
    assert scores["better"]["score"] == pytest.approx(1050.0)   # (1.25−80)/(5−80) = 1.05
    assert scores["worse"]["score"] == pytest.approx(-200.0)    # (95−80)/(5−80) = −0.2


def test_cli_prints_one_score_per_encoder_and_writes_json(tmp_path, refs, capsys):
    data = rows("theta0", KS_ACC=65.0, PR_PER=20.0) + rows("merged", ks_acc=90.0, pr_per=5.0)
    out = tmp_path / "scores.json"
    assert cli.main(["score", str(write(tmp_path, data)), "--references", str(refs), "--json", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[1].split()[:2] == ["theta0", "650.00"]        # (0.5 + 0.8) / 2
    assert printed[2].split()[:2] == ["merged", "1000.00"]
    written = json.loads(out.read_text())
    assert written["scores"] == {"theta0": pytest.approx(650.0), "merged": pytest.approx(1000.0)}
    assert written["detail"]["theta0"]["tasks"]["PR"]["metrics"]["PER"]["normalised"] == pytest.approx(0.8)


def test_task_missing_from_references_is_refused_in_one_line(tmp_path, refs, capsys):
    data = rows("a", KS_ACC=65.0) + rows("a", SID_ACC=50.0)
    assert cli.main(["score", str(write(tmp_path, data)), "--references", str(refs)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("speechft: error:") and "task 'SID'" in err[0] and "no reference points" in err[0]


@pytest.mark.parametrize("data, message", [
    (rows("a", SF_F1=80.0), "metric(s) CER missing"),
    (rows("a", KS_F1=80.0), "metric 'F1' of task KS"),
    (rows("a", KS_ACC=1.0) + rows("a", KS_ACC=2.0), "two rows"),
    (rows("a", split="dev", KS_ACC=1.0), "no rows with split 'test'"),
    ([{"encoder": "a", "task": "KS", "metric": "ACC", "value": "high", "split": "test"}], "finite number"),
])
def test_refusals(tmp_path, refs, data, message):
    with pytest.raises(SpeechFTError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score.run(write(tmp_path, data), refs)


def test_measured_baseline_encoder_and_mini_references(tmp_path):
    data = (rows("fbank", PR_PER=60.0, SID_ACC=20.0, KS_ACC=50.0, IC_ACC=10.0, ER_ACC=40.0, ASR_WER=90.0)
            + rows("theta0", PR_PER=30.0, SID_ACC=60.0, KS_ACC=75.0, IC_ACC=55.0, ER_ACC=70.0, ASR_WER=45.0))
    scores, refs = score.run(write(tmp_path, data), score.MINI_REFERENCES)
    assert refs["baseline_encoder"] == "fbank"
    assert scores["fbank"]["score"] == pytest.approx(0.0)
    assert scores["theta0"]["score"] == pytest.approx(500.0)    # every task halfway to perfect
    # without a baseline encoder the FBANK points are unknown
    with pytest.raises(SpeechFTError, match="no fbank value"):
        score.compute(score.load_results(write(tmp_path, data)), dict(refs, baseline_encoder=None))
    # --tasks restricts the average
    scores, _ = score.run(write(tmp_path, data), score.MINI_REFERENCES, tasks=["pr"])
    assert list(scores["theta0"]["tasks"]) == ["PR"]


def test_shipped_superb_references():
    refs = score.load_references(score.SUPERB_REFERENCES)
    assert set(refs["tasks"]) >= {"PR", "ASR", "KS", "QbE", "SID", "ASV", "SD", "ER", "IC", "SF"}
    for task, metrics in refs["tasks"].items():
        for metric, points in metrics.items():
            assert points["fbank"] is not None, (task, metric)
    # error rates: the state of the art is below FBANK
    for task, metric in [("PR", "PER"), ("ASR", "WER"), ("ASV", "EER"), ("SD", "DER"), ("SF", "CER")]:
        assert refs["tasks"][task][metric]["sota"] < refs["tasks"][task][metric]["fbank"]


def test_bad_references_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("tasks:\n  KS:\n    ACC: {fbank: 5, sota: 5}\n")
    with pytest.raises(SpeechFTError, match="divide by zero"):
        score.load_references(path)


def test_speech_ft_rows_under_shipped_references():
    """The Speech-FT paper's HuBERT Base rows (shared NOTES) under the leaderboard's points."""
    cols = [("PR", "PER"), ("ASR", "WER"), ("KS", "ACC"), ("QbE", "MTWV"), ("SID", "ACC"), ("ASV", "EER"),
            ("SD", "DER"), ("ER", "ACC"), ("IC", "ACC"), ("SF", "F1"), ("SF", "CER")]
    table = {"pre-trained": [5.17, 6.38, 96.59, .0687, 81.86, 5.56, 6.32, 64.99, 98.02, 88.54, 24.70],
             "speech-ft": [3.94, 5.75, 96.69, .1011, 84.11, 5.27, 5.99, 67.78, 98.97, 88.84, 23.46]}
    data = [{"encoder": e, "task": t, "metric": m, "value": v, "split": "test"}
            for e, vs in table.items() for (t, m), v in zip(cols, vs)]
    scores = score.compute(data, score.load_references(score.SUPERB_REFERENCES))
    assert scores["pre-trained"]["score"] == pytest.approx(916.26, abs=0.01)
    assert scores["speech-ft"]["score"] == pytest.approx(1004.37, abs=0.01)


def test_sd_der_and_qbe_mtwv_rows_as_the_recipes_write_them(tmp_path):
    """sd.sh writes DER in percent, qbe.sh MTWV as a fraction: the leaderboard's units."""
    data = [{"encoder": "theta0", "task": "sd", "metric": "der", "value": 6.32, "split": "test"},
            {"encoder": "theta0", "task": "qbe", "metric": "mtwv", "value": 0.0687, "split": "test"}]
    scores, _ = score.run(write(tmp_path, data), score.SUPERB_REFERENCES)
    tasks = scores["theta0"]["tasks"]
    # SD (error rate): (6.32 − 10.05) / (5.62 − 10.05) = 3.73 / 4.43; QbE: (0.0687 − 0.0058) / (0.0736 − 0.0058)
    assert tasks["SD"]["normalised"] == pytest.approx(3.73 / 4.43)
    assert tasks["QbE"]["normalised"] == pytest.approx(0.0629 / 0.0678)
    assert scores["theta0"]["score"] == pytest.approx(1000 * (3.73 / 4.43 + 0.0629 / 0.0678) / 2)
    data[1]["value"] = 6.87  # MTWV in percent by mistake
    with pytest.raises(SpeechFTError, match="MTWV 6.87 of encoder 'theta0' is above 1"):
        score.run(write(tmp_path, data), score.SUPERB_REFERENCES)
