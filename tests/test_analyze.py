"""speechft analyze: the similarity math, per-layer weight change, and the command end to end."""

import json

import numpy as np
import pytest

from speechft_upstream.checkpoints import files
from speechft_upstream import cli
from speechft_upstream.checkpoints import tiny
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate import analyze, similarity


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))  # correlated dims


def test_identical_features(features):
    assert similarity.linear_cka(features, features) == pytest.approx(1.0)
    assert similarity.linear_r2(features, features) == pytest.approx(1.0)


def test_cka_invariant_to_rotation_isotropic_scale_and_shift(features):
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 16)))
    moved = 7.5 * features @ q + 3.0
    assert similarity.linear_cka(features, moved) == pytest.approx(1.0)
    assert similarity.linear_r2(features, moved) == pytest.approx(1.0)  # affine, so perfectly predictable
    # CKA is not invariant to anisotropic scaling, R² (any linear map) is
    stretched = features * np.linspace(0.1, 10, 16)
    assert similarity.linear_cka(features, stretched) < 0.99
    assert similarity.linear_r2(features, stretched) == pytest.approx(1.0)


def test_unrelated_features_and_chunked_accumulation(features):
    rng = np.random.default_rng(2)
    other = rng.normal(size=features.shape)
    assert similarity.linear_cka(features, other) < 0.2
    assert similarity.linear_r2(features, other) < 0.2
    noisy = features + rng.normal(scale=features.std(), size=features.shape)
    acc = similarity.Accumulator()
    for start in range(0, 400, 64):  # frames arrive file by file
        acc.update(features[start:start + 64], noisy[start:start + 64])
    assert acc.cka() == pytest.approx(similarity.linear_cka(features, noisy))
    assert acc.r2() == pytest.approx(similarity.linear_r2(features, noisy))
    assert 0.2 < acc.r2() < 0.9


def test_relative_change():
    base = [np.ones((2, 2)), np.full(3, 2.0)]
    assert similarity.relative_change(base, base) == 0.0
    moved = [np.ones((2, 2)) * 2, np.full(3, 2.0)]
    assert similarity.relative_change(moved, base) == pytest.approx(np.sqrt(4 / (4 + 12)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("analyze")
    paths = {"theta0": tiny.write_tiny("hubert", folder / "theta0.pt", seed=0),
             "other": tiny.write_tiny("hubert", folder / "other.pt", seed=1)}
    # θ̂ = θ0 + 0.25 (θ′ − θ0) with θ′ the other seed, in transformer layer 1 only
    state = tiny.make_tiny("hubert", seed=0)
    other = files.weights(tiny.make_tiny("hubert", seed=1), "hubert")
    weights = files.weights(state, "hubert")
    for name in weights:
        if name.startswith("encoder.layers.1."):
            weights[name] = torch.lerp(weights[name], other[name], 0.25)
    paths["layer1"] = files.save_atomic(state, folder / "layer1.pt")
    audio = folder / "audio"
    (audio / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    import soundfile

    t = np.arange(16000) / 16000
    for i in range(4):
        wav = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t * (1 + 0.5 * t)) + 0.05 * rng.normal(size=t.size)
        soundfile.write(str(audio / ("sub" if i % 2 else ".") / f"utt{i}.wav"), wav.astype("float32"), 16000)
    paths["audio"] = audio
    return paths


def test_analyze_tiny_models(models):
    rows = analyze.analyze(models["theta0"], [models["theta0"], models["other"], models["layer1"]], models["audio"])
    by = {(r["model"], r["hidden_state"]): r for r in rows}
    assert {r["hidden_state"] for r in rows} == {0, 1, 2}          # 2 layers -> 3 hidden states
    assert rows[0]["files"] == 4
    for h in range(3):
        same = by[("theta0", h)]
        assert same["cka"] == pytest.approx(1.0) and same["r2"] == pytest.approx(1.0) and same["weight_change"] == 0
        assert by[("other", h)]["cka"] < 0.9 and by[("other", h)]["r2"] < 0.9
        assert by[("other", h)]["weight_change"] > 0.5
    # only layer 1 changed: hidden states 0 and 1 untouched, 2 moved
    assert by[("layer1", 0)]["weight_change"] == 0 and by[("layer1", 1)]["weight_change"] == 0
    assert by[("layer1", 1)]["cka"] == pytest.approx(1.0)
    assert 0 < by[("layer1", 2)]["weight_change"] < by[("other", 2)]["weight_change"]
    assert by[("other", 2)]["cka"] < by[("layer1", 2)]["cka"] < 1.0


def test_cli_end_to_end(models, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["analyze", "--base", str(models["theta0"]), "--models", str(models["other"]),
                     str(models["layer1"]), "--audio", str(models["audio"]), "-o", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| other | 2 |" in printed and "linear CKA" in printed
    for name in analyze.OUTPUT_NAMES:
        assert (out / name).stat().st_size > 0
    assert (out / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "similarity.json").read_text())
    assert len(data["rows"]) == 6
    assert (out / "similarity.csv").read_text().splitlines()[0].startswith("model,hidden_state,r2,cka,weight_change")


def test_refusals(models, tmp_path):
    wavlm = tiny.write_tiny("wavlm", tmp_path / "wavlm.pt")
    with pytest.raises(SpeechFTError, match="is a wavlm checkpoint"):
        analyze.analyze(models["theta0"], [wavlm], models["audio"])
    with pytest.raises(SpeechFTError, match="no .wav or .flac"):
        analyze.analyze(models["theta0"], [models["other"]], tmp_path)
    import soundfile

    (tmp_path / "a").mkdir()
    soundfile.write(str(tmp_path / "a" / "x.wav"), np.zeros(8000, "float32"), 8000)
    with pytest.raises(SpeechFTError, match="8000 Hz"):
        analyze.analyze(models["theta0"], [models["other"]], tmp_path / "a")
    (tmp_path / "b").mkdir()
    soundfile.write(str(tmp_path / "b" / "x.wav"), np.zeros(4000, "float32"), 16000)
    with pytest.raises(SpeechFTError, match="more frames than dimensions"):
        analyze.analyze(models["theta0"], [models["other"]], tmp_path / "b")
