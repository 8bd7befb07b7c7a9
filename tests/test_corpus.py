"""speechft corpus: eSpeak NG synthesis, determinism, and every layout read by s3prl's own dataset classes."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechft_upstream.data import corpus, plan  # noqa: E402
from tests.conftest import corpus_digest  # noqa: E402




@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    manifest = corpus.generate(out, seed=3, size="tiny", workers=2)
    return out, manifest


def test_espeak_engine():
    from speechft_upstream.data.espeak import Engine

    engine = Engine()
    engine.set_voice("en-us+m3")
    audio = engine.synth("hello world.")
    assert audio.dtype == np.int16 and audio.size > engine.sample_rate * 0.3
    assert engine.phonemes("hello world") == [["h", "@", "l", "oU"], ["w", "3", "l", "d"]]
    assert engine.version.startswith("1.52")


def test_deterministic_for_a_seed(tiny, tmp_path):
    out, manifest = tiny
    again = corpus.generate(tmp_path / "again", seed=3, size="tiny", workers=1)  # other process count too
    assert corpus_digest(out) == corpus_digest(tmp_path / "again")
    assert again["utterances"] == manifest["utterances"]
    other = corpus.plan(seed=4, size="tiny")
    assert other["speakers"] != corpus.plan(seed=3, size="tiny")["speakers"]


def test_manifest_and_audio(tiny):
    import soundfile

    out, manifest = tiny
    assert manifest["espeak_ng"].startswith("1.52") and manifest["sample_rate"] == 16000
    tasks = {u["task"] for u in manifest["utterances"]}
    assert tasks == {"asr", "sid", "ks", "ic", "er", "sf", "sd", "qbe"}  # asv reuses sid and asr audio
    for u in manifest["utterances"][:40]:
        data, rate = soundfile.read(str(out / u["path"]))
        assert rate == 16000 and data.ndim == 1 and np.abs(data).max() > 0.05
        if u["task"] == "ks":
            assert data.size == 16000
        assert u["text"] and u["phonemes"]
    assert json.loads((out / "corpus.json").read_text())["seed"] == 3
    # reuse: a second call with the same seed and size returns the manifest without synthesis
    assert corpus.generate(out, seed=3, size="tiny")["utterances"] == manifest["utterances"]


def test_default_plan_speakers():
    layout = corpus.plan(seed=0)
    roles = layout["roles"]
    assert len(roles["train"]) >= 60 and len(layout["speakers"]) == 80
    sid = {j["speaker"] for j in layout["jobs"] if j["task"] == "sid"}
    assert len(sid) >= 60 and {j["split"] for j in layout["jobs"] if j["task"] == "sid"} == {"train", "dev", "test"}
    voices = {(s["accent"], s["variant"], s["pitch"], s["rate"]) for s in layout["speakers"]}
    assert len(voices) == len(layout["speakers"])
    for task in ("asr", "ks", "ic", "er"):
        train = {j["speaker"] for j in layout["jobs"] if j["task"] == task and j["split"] == "train"}
        test = {j["speaker"] for j in layout["jobs"] if j["task"] == task and j["split"] == "test"}
        assert train and test and not train & test, task
    labels = {j["label"] for j in layout["jobs"] if j["task"] == "ks" and j["split"] == "test"}
    assert set(plan.KEYWORDS) <= labels and "_unknown_" in labels


def test_asr_layout(tiny):
    from s3prl.downstream.asr.dataset import SequenceDataset
    from s3prl.downstream.asr.dictionary import Dictionary

    out, manifest = tiny
    dictionary = Dictionary.load(str(out / "asr" / "char.dict"))
    for split in ("train", "dev", "test"):
        data = SequenceDataset(split, 2, dictionary, str(out / "asr" / "LibriSpeech"), str(out / "asr" / "bucket"),
                               **{split: [split]})
        wavs, labels, names = data.collate_fn([data[0]])
        assert wavs[0].ndim == 1 and len(labels[0]) > 5 and dictionary.unk() not in labels[0].tolist()


def test_pr_layout(tiny):
    import pandas as pd
    import s3prl.downstream.ctc.expert  # noqa: F401  (as the runner does: speechft's hook adds the corpus package)
    from s3prl.downstream.ctc.data import load_dataset
    from s3prl.downstream.ctc.text import load_text_encoder

    out, _ = tiny
    vocab = set((out / "pr" / "phones.txt").read_text().split())
    for split in ("train", "dev", "test"):
        table = pd.read_csv(out / "pr" / f"{split}.csv")
        assert len(table)
        for path, phones in zip(table["wav_path"], table["phonemes"]):
            assert (out / "pr" / path).is_file() and set(phones.split()) <= vocab
    # s3prl's own `-d ctc` data path, libriphone corpus (supplied by speechft's compat layer on PyPI s3prl)
    tokenizer = load_text_encoder("word", str(out / "pr" / "phones.txt"))
    for split in ("train", "dev", "test"):
        loader = load_dataset(split, tokenizer, {"name": "libriphone", "csv_dir": str(out / "pr"), "train": "train.csv",
                                                 "dev": "dev.csv", "test": "test.csv", "bucketing": True,
                                                 "batch_size": 2, "num_workers": 0})
        assert next(iter(loader))


def test_sid_layout(tiny, tmp_path, monkeypatch):
    from s3prl.downstream.voxceleb1 import dataset as vox

    monkeypatch.setattr(vox, "CACHE_PATH", str(tmp_path / "cache"))  # s3prl caches file lists in site-packages
    out, manifest = tiny
    n = {split: sum(1 for u in manifest["utterances"] if u["task"] == "sid" and u["split"] == split)
         for split in ("train", "dev", "test")}
    for split in ("train", "dev", "test"):
        data = vox.SpeakerClassifiDataset(split, out / "sid", str(out / "sid" / "iden_split.txt"))
        assert len(data) == n[split]
        wav, label, name = data[0]
        assert wav.ndim == 1 and 0 <= label < 6
    assert sorted(set(data.label)) == list(range(6))


def test_sid_cache_is_per_data_set(tiny, tmp_path, monkeypatch):
    """s3prl keys its voxceleb1 file-list cache by split only; the hook keys it by the data too."""
    import shutil

    from s3prl.downstream.voxceleb1 import dataset as vox

    assert getattr(vox.SpeakerClassifiDataset.__init__, "_speechft", False)  # installed on import
    monkeypatch.setattr(vox, "CACHE_PATH", str(tmp_path / "cache"))
    out, _ = tiny
    other = tmp_path / "sid2"
    shutil.copytree(out / "sid", other)
    lines = (other / "iden_split.txt").read_text().splitlines(True)
    train = [line for line in lines if line.startswith("1 ")]
    (other / "iden_split.txt").write_text("".join(train[: len(train) // 2]))
    first = vox.SpeakerClassifiDataset("train", out / "sid", str(out / "sid" / "iden_split.txt"))
    second = vox.SpeakerClassifiDataset("train", other, str(other / "iden_split.txt"))
    assert len(second) == len(train) // 2 < len(first) == len(train)  # stock s3prl: len(first) both times
    assert all(str(path).startswith(str(other)) for path in second.dataset)  # its own files
    again = vox.SpeakerClassifiDataset("train", out / "sid", str(out / "sid" / "iden_split.txt"))
    assert again.dataset == first.dataset and vox.CACHE_PATH == str(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*/train.pkl"))) == 2


def test_ks_layout(tiny):
    from s3prl.downstream.speech_commands.dataset import CLASSES, SpeechCommandsDataset, SpeechCommandsTestingDataset
    from s3prl.downstream.speech_commands.expert import split_dataset

    out, manifest = tiny
    root = out / "ks" / "train"
    train_list, valid_list = split_dataset(root)
    dev_names = {Path(p).name.split("_nohash_")[0] for _, p in valid_list}
    train_names = {Path(p).name.split("_nohash_")[0] for _, p in train_list}
    assert dev_names and train_names and not dev_names & train_names
    train = SpeechCommandsDataset(train_list, speech_commands_root=str(root))
    wav, label, _ = train[0]
    assert wav.shape == (16000,)
    assert CLASSES.index("_silence_") in {label for label, _ in [(train.class2index[c], p) for c, p in train.data]}
    test = SpeechCommandsTestingDataset(speech_commands_test_root=str(out / "ks" / "test"))
    classes = {c for c, _ in test.data}
    assert {"_unknown_", "_silence_"} <= classes and classes <= set(CLASSES)
    assert test[0][0].shape == (16000,)


def test_ic_layout(tiny):
    from collections import Counter

    import pandas as pd
    from s3prl.downstream.fluent_commands.dataset import FluentCommandsDataset

    out, _ = tiny
    base = str(out / "ic")
    tables = {name: pd.read_csv(out / "ic" / "data" / f"{name}_data.csv") for name in ("train", "valid", "test")}
    intent = {"action": {}, "object": {}, "location": {}}
    for slot in intent:  # as the s3prl expert builds it: from the train table alone
        for value in Counter(tables["train"][slot]):
            intent[slot].setdefault(value, len(intent[slot]))
    for table in tables.values():
        data = FluentCommandsDataset(table, base, intent)
        for i in range(len(data)):  # every label of every split must be in the train vocabulary
            wav, label, _ = data[i]
            assert wav.ndim == 1 and label.shape == (3,)
    assert not set(tables["train"]["speakerId"]) & set(tables["test"]["speakerId"])


def test_er_layout(tiny):
    from s3prl.downstream.emotion.dataset import IEMOCAPDataset

    out, _ = tiny
    for name in ("train", "test"):
        data = IEMOCAPDataset(str(out / "er"), str(out / "er" / "meta_data" / "Session1" / f"{name}_meta_data.json"),
                              pre_load=False)
        assert data.class_num == 4
        wav, label, _ = data[0]
        assert wav.ndim == 1 and 0 <= label < 4
