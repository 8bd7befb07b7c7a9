"""`speechft unsupervised`: continued pre-training of the tiny HuBERT on audio the test writes."""

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import REPO, assert_ok, run_py

FROZEN = ("feature_extractor.", "final_proj.", "label_embs_concat")


def write_audio(folder, rate=16000, n=3, seconds=1.2, channels=1, ext="wav"):
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        t = np.arange(int(rate * (seconds + 0.2 * i))) / rate
        wave = 0.3 * np.sin(2 * np.pi * (180 + 90 * i) * t) + 0.05 * rng.standard_normal(t.size)
        data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
        soundfile.write(str(folder / f"clip{i}.{ext}"), data.astype("float32"), rate)
    return folder


def unsupervised(ckpt, audio, out, *extra):
    return run_py(["-m", "speechft_upstream.cli", "unsupervised", "--ckpt", ckpt, "--audio", audio, "-o", out,
                   "--batch-size", "2", "--max-seconds", "1", *extra], cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def trained(tiny_hubert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unsup")
    audio = write_audio(tmp / "audio")
    write_audio(tmp / "audio" / "more", n=1, ext="flac")  # sub-folders and .flac count too
    out = tmp / "out" / "theta_prime.pt"
    proc = unsupervised(tiny_hubert, audio, out, "--steps", "4", "--lr", "1e-3", "--seed", "3")
    assert_ok(proc)
    return out, proc


def test_output_loads_in_stock_s3prl_and_freezes_cnn_and_codebook(trained, tiny_hubert):
    import s3prl.hub

    out, proc = trained
    assert "wrote" in proc.stdout and "4 files" in proc.stderr
    theta0 = torch.load(tiny_hubert, weights_only=True)
    theta1 = torch.load(out, weights_only=True)
    assert set(theta1) == set(theta0)
    for key in ("task_cfg", "model_cfg", "dictionaries_symbols"):
        assert theta1[key] == theta0[key]
    w0, w1 = theta0["model_weight"], theta1["model_weight"]
    assert list(w1) == list(w0)
    frozen = [k for k in w0 if k.startswith(FROZEN)]
    assert any(k.startswith("feature_extractor.") for k in frozen) and "label_embs_concat" in frozen
    assert any(k.startswith("final_proj.") for k in frozen)
    for key in frozen:
        assert torch.equal(w0[key], w1[key]), key
    changed = [k for k in w0 if k.startswith("encoder.layers.") and not torch.equal(w0[k], w1[k])]
    assert len(changed) > 10, changed

    upstream = s3prl.hub.hubert_local(ckpt=str(out)).eval()
    with torch.no_grad():
        hidden = upstream([torch.randn(16000)])["hidden_states"]
    assert len(hidden) == 3 and all(torch.isfinite(h).all() for h in hidden)


def test_loss_log(trained):
    out, _ = trained
    log = json.loads(out.with_name("theta_prime.loss.json").read_text())
    assert len(log["loss"]) == log["steps"] == 4
    assert all(math.isfinite(x) and x > 0 for x in log["loss"])
    assert all(n > 0 for n in log["masked_frames"])
    assert log["targets"] == "current" and log["files"] == 4


def cli_error(capsys, ckpt, audio, out, *extra):
    """Run the command in-process (one import for all refusals); its single error line."""
    from speechft_upstream.cli import main

    argv = ["unsupervised", "--ckpt", str(ckpt), "--audio", str(audio), "-o", str(out), "--steps", "1", *extra]
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("speechft: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def test_refuses_bad_input(tmp_path, tiny_hubert, tiny_dir, capsys):
    out = tmp_path / "x.pt"
    (tmp_path / "empty").mkdir()
    cases = {
        "rate": (write_audio(tmp_path / "rate8k", rate=8000, n=1), tiny_hubert, "clip0.wav: sample rate is 8000 Hz"),
        "stereo": (write_audio(tmp_path / "stereo", n=1, channels=2), tiny_hubert, "has 2 channels"),
        "empty": (tmp_path / "empty", tiny_hubert, "no .wav or .flac files"),
        "missing": (tmp_path / "nowhere", tiny_hubert, "no such folder"),
        "family": (write_audio(tmp_path / "ok", n=1), tiny_dir / "wav2vec2.pt", "but a hubert checkpoint is needed"),
        "short": (write_audio(tmp_path / "short", n=1, seconds=0.05), tiny_hubert, "too short"),
    }
    for name, (audio, ckpt, message) in cases.items():
        assert message in cli_error(capsys, ckpt, audio, out), name
    assert "--mask-prob must be in" in cli_error(capsys, tiny_hubert, tmp_path / "ok", out, "--mask-prob", "0")
    assert not out.exists()


def test_refuses_to_overwrite(trained, tiny_hubert, tmp_path, capsys):
    out, _ = trained
    before = out.read_bytes()
    line = cli_error(capsys, tiny_hubert, write_audio(tmp_path / "a", n=1), out)
    assert "already exists (use --force" in line
    assert out.read_bytes() == before


def test_recipe_help():
    import subprocess

    proc = subprocess.run(["bash", str(REPO / "downstream_recipes" / "unsupervised.sh"), "-h"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: downstream_recipes/unsupervised.sh" in proc.stdout
