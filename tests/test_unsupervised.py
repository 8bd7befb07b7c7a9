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


def collapsed_theta0(tiny_hubert, path):
    """θ0 whose codeword head puts every frame in one codeword: all codewords equal."""
    from speechft_upstream.checkpoints import files

    state = torch.load(tiny_hubert, weights_only=True)
    codes = state["model_weight"]["label_embs_concat"]
    state["model_weight"]["label_embs_concat"] = codes[:1].expand_as(codes).clone()
    files.save_atomic(state, path)
    return path


@pytest.mark.parametrize("targets", ["theta0", "current"])
def test_collapsed_targets_refused_in_one_line(tmp_path, tiny_hubert, targets):
    audio = write_audio(tmp_path / "audio")
    theta0 = collapsed_theta0(tiny_hubert, tmp_path / "collapsed.pt")
    out = tmp_path / "out.pt"
    proc = unsupervised(theta0, audio, out, "--steps", "3", "--targets", targets)
    assert proc.returncode == 1, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert errors == [f"speechft: error: {theta0}: the targets of the first 3 batches use 1 codeword "
                      f"(fewer than --min-codewords 4); training against them learns nothing: use a θ0 whose "
                      f"codeword head separates frames, or --targets {'current' if targets == 'theta0' else 'theta0'}"]
    assert not out.exists()
    # --min-codewords 1 accepts it (and bad values are refused)
    assert_ok(unsupervised(theta0, audio, out, "--steps", "1", "--targets", targets, "--min-codewords", "1"))
    proc = unsupervised(theta0, audio, tmp_path / "x.pt", "--min-codewords", "0")
    assert proc.returncode == 1 and "--min-codewords must be a positive integer, got 0" in proc.stderr


def test_warns_when_codeword_usage_falls_during_training(tmp_path, tiny_hubert):
    audio = write_audio(tmp_path / "audio")
    # lr 1e-3 against its own targets: usage falls within a few steps (about 12 → 4 here)
    args = ("--steps", "6", "--lr", "1e-3", "--seed", "0")
    first = unsupervised(tiny_hubert, audio, tmp_path / "a.pt", *args)
    assert_ok(first)
    counts = json.loads((tmp_path / "a.loss.json").read_text())["batch_codewords"]
    assert len(counts) == 6 and min(counts) < max(counts)
    limit = max(counts)
    proc = unsupervised(tiny_hubert, audio, tmp_path / "b.pt", *args, "--min-codewords", str(limit))
    assert_ok(proc)
    assert json.loads((tmp_path / "b.loss.json").read_text())["batch_codewords"] == counts  # same run
    warned = [int(ln.split("step ")[1].split(":")[0]) for ln in proc.stderr.splitlines()
              if ln.startswith("speechft: warning: step")]
    expected = [s for s in range(1, 7) if counts[s - 1] < limit and (s == 1 or counts[s - 2] >= limit)]
    assert warned == expected and warned
    assert "fewer than --min-codewords" in proc.stderr
    assert "speechft: warning" not in first.stderr  # default 4: usage never fell below it here
