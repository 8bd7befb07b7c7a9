"""downstream_recipes/sd.sh and qbe.sh on the tiny `speechft corpus` (sd/, qbe/) with a tiny HuBERT."""

import json
import math
import shutil

import pytest

pytest.importorskip("espeakng_loader")

from speechft_upstream.data import corpus  # noqa: E402
from speechft_upstream.evaluate import der, mtwv  # noqa: E402
from tests.test_recipes import SMOKE, ok, recipe  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    corpus.generate(out, seed=3, size="tiny", workers=2)
    return out


def error_lines(proc):
    return [line for line in proc.stderr.splitlines() if line.startswith("speechft: error:")]


def test_sd_evaluate(data, tmp_path, tiny_hubert):
    exp = tmp_path / "sd_eval"
    # 100-frame chunks: the 7 s test mixture is cut into 4 chunks, the last one padded by s3prl
    ok(recipe("sd", "evaluate", "--ckpt", tiny_hubert, "--data", data / "sd", "--exp", exp, *SMOKE,
              "-o", "config.downstream_expert.datarc.chunk_size=100"))
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "sd" and results["metric"] == "der" and results["split"] == "test"
    assert results["higher_is_better"] is False and results["steps"] == 2
    assert math.isfinite(results["value"]) and 0 <= results["value"]
    metrics = results["metrics"]
    assert len(metrics["sweep"]) == 10 and results["value"] == min(metrics["sweep"].values())
    # the value is pyannote's DER of the RTTM that s3prl's make_rttm.py wrote for the best setting
    best = exp / "scoring" / f"hyp_{metrics['threshold']}_{metrics['median']}.rttm"
    assert results["value"] == pytest.approx(100 * der.der_files(data / "sd" / "test" / "rttm", best)["der"], abs=1e-3)
    # the hook trimmed the padded last chunk: one posterior per real frame, none after the end
    import h5py

    frames = {rec: int(float(d) * 16000 / 320) for rec, d in
              (line.split() for line in (data / "sd" / "test" / "reco2dur").read_text().splitlines())}
    for rec, n in frames.items():
        with h5py.File(exp / "scoring" / "predictions" / f"{rec}.h5", "r") as handle:
            assert handle["T_hat"].shape == (n, 2)


def test_sd_finetune(data, tmp_path, tiny_hubert):
    exp = tmp_path / "sd_ft"
    ok(recipe("sd", "finetune", "--ckpt", tiny_hubert, "--data", data / "sd", "--exp", exp, "--beta", "0.5", *SMOKE))
    assert (exp / "theta_prime.pt").is_file() and (exp / "best-states-dev.ckpt").is_file()


def test_qbe_evaluate(data, tmp_path, tiny_hubert):
    exp = tmp_path / "qbe_eval"
    ok(recipe("qbe", "evaluate", "--ckpt", tiny_hubert, "--data", data / "qbe", "--exp", exp, "--device", "cpu"))
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "qbe" and results["metric"] == "mtwv" and results["split"] == "test"
    assert math.isfinite(results["value"]) and 0 <= results["value"] <= 1
    by_layer = results["metrics"]["dev_mtwv_by_layer"]
    assert sorted(by_layer) == ["0", "1", "2"]  # the tiny HuBERT's three hidden states
    layer = results["layer"]
    assert by_layer[str(layer)] == max(by_layer.values())
    # the value is the MTWV of the eval run's stdlist against the eval ground truth
    gt = data / "qbe" / "scoring" / "groundtruth_quesst14_eval"
    again = mtwv.score_files(exp / f"test_layer_{layer}" / "benchmark.stdlist.xml", gt)
    assert results["value"] == pytest.approx(again["mtwv"], abs=1e-6)


def test_qbe_finetune_is_refused():
    proc = recipe("qbe", "finetune", "--ckpt", "x.pt", "--data", "d", "--exp", "e")
    assert proc.returncode == 1
    lines = error_lines(proc)
    assert len(lines) == 1 and "QbE has nothing to fine-tune" in lines[0]


def test_missing_files_are_one_line(data, tmp_path, tiny_hubert):
    sd = tmp_path / "sd"
    shutil.copytree(data / "sd", sd)
    (sd / "test" / "rttm").unlink()
    proc = recipe("sd", "evaluate", "--ckpt", tiny_hubert, "--data", sd, "--exp", tmp_path / "e1", "--device", "cpu")
    lines = error_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert "missing test/rttm (SD data layout: Kaldi folders train/ dev/ test/" in lines[0] and "downstream_recipes/README.md" in lines[0]
    assert "training" not in proc.stderr  # refused before the runner starts
    shutil.copy(data / "sd" / "test" / "rttm", sd / "test" / "rttm")
    moved = sd / "dev" / "wav" / "dev_0000.wav"
    moved.unlink()  # wav.scp still names the corpus's own file: point it at a missing one
    scp = sd / "dev" / "wav.scp"
    scp.write_text(scp.read_text().replace(str((data / "sd").resolve()), str(sd)))
    proc = recipe("sd", "evaluate", "--ckpt", tiny_hubert, "--data", sd, "--exp", tmp_path / "e2", "--device", "cpu")
    lines = error_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-2000:]
    assert f"dev/wav.scp:1: {moved}: no such audio file" in lines[0] and "SD data layout" in lines[0]

    qbe = tmp_path / "qbe"
    shutil.copytree(data / "qbe", qbe)
    cases = [
        (lambda: (qbe / "scoring" / "language_key_dev.lst").unlink(), "missing scoring/language_key_dev.lst"),
        (lambda: (qbe / "Audio" / "qbe_doc_0003.wav").unlink(), "Audio/qbe_doc_0003.wav: missing (listed in"),
        (lambda: shutil.rmtree(qbe / "scoring" / "groundtruth_quesst14_eval"), "missing scoring/groundtruth_quesst14_eval/"),
    ]
    for i, (breakage, message) in enumerate(cases):
        shutil.rmtree(qbe)
        shutil.copytree(data / "qbe", qbe)
        breakage()
        proc = recipe("qbe", "evaluate", "--ckpt", tiny_hubert, "--data", qbe, "--exp", tmp_path / f"q{i}")
        lines = error_lines(proc)
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
        assert "QbE data layout" in lines[0] and "[qbe.sh] dev" not in proc.stderr
