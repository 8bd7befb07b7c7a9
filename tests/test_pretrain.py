"""`speechft pretrain`: a small HuBERT θ0 from MFCC k-means targets on a corpus the test writes
(iteration 1 only; both iterations: tests/test_theta0_shipped.py)."""

import json

import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_py

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def write_corpus(root, n_train=6, n_dev=2, seconds=1.6):
    """A few voiced-sounding clips in `speechft corpus` layout: wav files plus corpus.json."""
    import soundfile

    rng = np.random.default_rng(0)
    utterances = []
    for i in range(n_train + n_dev):
        split = "train" if i < n_train else "dev"
        n = int(16000 * (seconds + 0.25 * (i % 3)))
        t = np.arange(n) / 16000
        pitch = 110 + 20 * i + 30 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / 16000
        wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        wave = 0.2 * wave + 0.02 * rng.standard_normal(n)
        path = f"asr/{split}/utt{i}.wav"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(root / path), wave.astype("float32"), 16000, subtype="PCM_16")
        utterances.append({"id": f"utt{i}", "task": "asr", "split": split, "speaker": i, "path": path, "samples": n})
    (root / "corpus.json").write_text(json.dumps({"format": 1, "sample_rate": 16000, "utterances": utterances}))
    return root


def pretrain(corpus, out, *extra):
    return run_py(["-m", "speechft_upstream.cli", "pretrain", "--corpus", corpus, "-o", out, "--quick",
                   "--clusters", "8", "--seed", "1", "--iter2-steps", "0", *extra], cwd=REPO, env=ENV, timeout=300)


def one_error_line(proc):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("speechft: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrain")
    corpus = write_corpus(tmp / "corpus")
    out = tmp / "out" / "theta0.pt"
    proc = pretrain(corpus, out, "--steps", "8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote" in proc.stdout
    return tmp, corpus, out


def test_loads_in_stock_hubert_local_and_speechft(made):
    import s3prl.hub as hub

    _, _, out = made
    state = torch.load(out, weights_only=True)
    assert set(state) == {"task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"}
    assert state["model_weight"]["label_embs_concat"].shape[0] == len(state["dictionaries_symbols"][0]) == 8 + 4
    wavs = [torch.randn(16000) * 0.1, torch.randn(12000) * 0.1]
    stock = hub.hubert_local(ckpt=str(out)).eval()
    ours = hub.speechft_hubert(ckpt=str(out)).eval()
    with torch.no_grad():
        a, b = stock(wavs)["hidden_states"], ours(wavs)["hidden_states"]
    assert len(a) == state["model_cfg"]["encoder_layers"] + 1
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all(torch.isfinite(x).all() for x in a)


def test_sidecar_records_training(made):
    _, _, out = made
    record = json.loads((out.parent / "theta0.pt.json").read_text())
    assert len(record["loss"]) == 8 and all(np.isfinite(record["loss"]))
    assert np.isfinite(record["final_loss"]) and 0 <= record["final_accuracy"] <= 1
    assert record["settings"]["clusters"] == 8 and record["settings"]["seed"] == 1
    assert record["kmeans"]["used_clusters"] <= 8 and len(record["corpus_sha256"]) == 64


def test_cache_reuse_refusal_and_force(made):
    tmp, corpus, out = made
    before = out.read_bytes()
    proc = pretrain(corpus, out, "--steps", "8")
    assert proc.returncode == 0 and proc.stdout.startswith("reusing"), proc.stdout + proc.stderr
    assert out.read_bytes() == before
    line = one_error_line(pretrain(corpus, out, "--steps", "3"))
    assert "steps 8 -> 3" in line and "--force" in line
    assert out.read_bytes() == before
    # same seed, same thread count: the same weights (written again under --force)
    again = tmp / "again.pt"
    assert pretrain(corpus, again, "--steps", "8").returncode == 0
    a, b = torch.load(out, weights_only=True), torch.load(again, weights_only=True)
    assert all(torch.equal(a["model_weight"][k], b["model_weight"][k]) for k in a["model_weight"])
    proc = pretrain(corpus, again, "--steps", "3", "--force")
    assert proc.returncode == 0 and "wrote" in proc.stdout, proc.stderr
    assert json.loads((tmp / "again.pt.json").read_text())["settings"]["steps"] == 3


def test_missing_corpus_is_one_line(tmp_path):
    line = one_error_line(pretrain(tmp_path / "nowhere", tmp_path / "t.pt", "--steps", "2"))
    assert "nowhere" in line and "speechft corpus" in line
    assert not (tmp_path / "t.pt").exists()
