"""benchmarks/merge_apart.py at tiny size: two tiny HuBERTs initialised apart, the tiny music corpus."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("merge_apart", ROOT / "benchmarks" / "merge_apart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from speechft_upstream.checkpoints.tiny import write_tiny
    from speechft_upstream.data.music import generate

    tmp = tmp_path_factory.mktemp("merge_apart")
    write_tiny("hubert", tmp / "a.pt", seed=0)
    write_tiny("hubert", tmp / "b.pt", seed=1)
    generate(tmp / "music", size="tiny")
    script = _script()
    script.main(["--pair", f"{tmp / 'a.pt'}:{tmp / 'b.pt'}:ab", "--music-corpus", str(tmp / "music"),
                 "--out", str(tmp / "out"), "--tasks", "instrument", "--alphas", "0,0.5,1", "--seeds", "2", "--eval-aligned-b",
                 "--align-seconds", "20"])
    return tmp, script


def test_outputs_and_endpoints(run):
    tmp, script = run
    out = tmp / "out"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 3 * 3 * 2  # methods × α × seeds
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["probe"]["ab"]) == set(script.METHODS)
    assert "| aligned_repair | 0.5 |" in (out / "results.md").read_text()
    value = {(r["method"], float(r["alpha"]), r["seed"]): float(r["value"]) for r in rows}
    for seed in ("0", "1"):  # α = 0 is A itself whatever the method
        assert value[("linear", 0.0, seed)] == value[("aligned", 0.0, seed)] == value[("aligned_repair", 0.0, seed)]

    work = out / "work" / "ab"
    digest = {m: script.weights_digest(work / m / "alpha0.pt") for m in script.METHODS}
    assert len(set(digest.values())) == 1
    # α = 1: B aligned to A holds other weights than B but computes the same features
    d_lin, d_al = script.weights_digest(work / "linear" / "alpha1.pt"), script.weights_digest(work / "aligned" / "alpha1.pt")
    assert d_lin != d_al
    feats = out / "work" / "features"
    a, b = (np.load(next((feats / d).glob("instrument_test_*.npy"))) for d in (d_lin, d_al))
    assert np.abs(a - b).max() < 1e-4 * max(1.0, np.abs(a).max())
    # the aligned mid-point is a different model from the linear one
    assert script.weights_digest(work / "linear" / "alpha0.5.pt") != script.weights_digest(work / "aligned" / "alpha0.5.pt")


def test_alignment_audio_has_no_test_clip(run):
    tmp, _ = run
    linked = [p.resolve().name for p in (tmp / "out" / "work" / "align_audio").iterdir()]
    manifest = json.loads((tmp / "music" / "music.json").read_text())
    test_clips = {Path(c["path"]).name for c in manifest["clips"] if c["split"] == "test"}
    assert linked and not test_clips & set(linked)


def test_t_interval():
    _, half = _script().t_interval([0.5, 0.7, 0.6])
    # sd 0.1, t(0.975, 2) = 4.3027: half-width 4.3027 · 0.1 / √3
    assert half == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-5)


def test_pretrain_reads_music_train_clips(run):
    from speechft_upstream.pretrain.data import read_corpus

    tmp, _ = run
    manifest, sha, train, dev = read_corpus(tmp / "music")
    assert train and dev == [] and {c["split"] for c in train} == {"train"}
    assert len(train) == sum(c["split"] == "train" for c in manifest["clips"]) and len(sha) == 64
