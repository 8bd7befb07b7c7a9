"""`speechft corpus --music`: deterministic synthetic music, read through s3prl's own `emotion`
dataset class, and evaluated by the unchanged downstream_recipes/er.sh."""

import json
import os

import numpy as np
import pytest
import soundfile

from speechft_upstream.data import music
from tests.test_merge_cli import speechft
from tests.test_recipes import SMOKE, check_results, ok, recipe


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("music") / "corpus"
    music.generate(out, seed=0, size="tiny")
    return out


def test_deterministic_for_a_seed(corpus, tmp_path):
    again = music.generate(tmp_path / "again", seed=0, size="tiny")
    assert (tmp_path / "again" / "music.json").read_bytes() == (corpus / "music.json").read_bytes()
    for clip in again["clips"][::17]:
        assert (tmp_path / "again" / clip["path"]).read_bytes() == (corpus / clip["path"]).read_bytes()
    other = music.generate(tmp_path / "other", seed=1, size="tiny")
    first = other["clips"][0]["path"]
    assert (tmp_path / "other" / first).read_bytes() != (corpus / first).read_bytes()


def test_labels_are_in_the_audio(corpus):
    """Every pitch clip's strongest partial has the labelled pitch class (octaves aside)."""
    manifest = json.loads((corpus / "music.json").read_text())
    pitch = [c for c in manifest["clips"] if c["task"] == "pitch"]
    assert {c["label"] for c in pitch} == set(music.NOTES)
    for clip in pitch:
        x, sr = soundfile.read(str(corpus / clip["path"]))
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        spectrum[freqs < 60] = 0
        peak = freqs[spectrum.argmax()]
        assert music.NOTES[int(round(12 * np.log2(peak / 440) + 69)) % 12] == clip["label"], clip
    genres = {c["label"]: c for c in manifest["clips"] if c["task"] == "genre"}
    assert genres["waltz"]["meter"] == 3 and genres["march"]["meter"] == 4
    assert genres["chorale"]["bpm"] < genres["techno"]["bpm"]


@pytest.mark.parametrize("task", list(music.TASKS))
def test_read_by_s3prl_emotion_dataset(corpus, task):
    from s3prl.downstream.emotion.dataset import IEMOCAPDataset

    session = corpus / task / "meta_data" / "Session1"
    train = IEMOCAPDataset(str(corpus / task), str(session / "train_meta_data.json"))
    test = IEMOCAPDataset(str(corpus / task), str(session / "test_meta_data.json"), pre_load=False)
    n_train, n_test = music.SIZES["tiny"]
    labels = music.TASKS[task]
    assert train.class_num == len(labels) == test.class_num
    assert len(train) == n_train * len(labels) and len(test) == n_test * len(labels)
    seen = set()
    for i in range(len(test)):
        wav, label, stem = test[i]
        assert wav.ndim == 1 and wav.dtype == np.float32 and len(wav) >= 16000 and np.abs(wav).max() > 0.1
        assert stem.startswith(task + "_")
        seen.add(label)
    assert seen == set(range(len(labels)))


def test_cli_writes_reuses_and_refuses(corpus, tmp_path):
    out = tmp_path / "quick"
    proc = speechft("corpus", "--music", out, "--quick", "--seed", "2")
    assert proc.returncode == 0, proc.stderr
    assert "480 music clips" in proc.stdout
    assert not (tmp_path / "quick.partial").exists()
    manifest = json.loads((out / "music.json").read_text())
    assert manifest["seed"] == 2 and manifest["size"] == "quick" and len(os.listdir(out / "wav")) == 480
    again = speechft("corpus", "--music", out, "--quick", "--seed", "2")
    assert again.returncode == 0 and "reusing it" in again.stderr
    refused = speechft("corpus", "--music", corpus, "--seed", "0")  # a tiny corpus there, default asked
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and lines == [f"speechft: error: {corpus}: exists and is not this music "
                                                 "corpus (seed 0, default); use --force to replace it"]


def test_er_recipe_evaluates_a_music_task(corpus, tmp_path, tiny_hubert):
    exp = tmp_path / "genre_eval"
    ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", corpus / "genre", "--exp", exp, "--fold", "fold1", *SMOKE))
    results = check_results(exp, "er", tiny_hubert)
    assert results["metric"] == "acc" and results["split"] == "test"
