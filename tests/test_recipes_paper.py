"""The paper's recipes: fine-tuning features (-s), ER five folds, LibriSpeech bucket files,
IEMOCAP meta data, TED-LIUM 3 ASR (asr_ted). Tiny corpora written by the tests, real runner."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from tests.test_recipes import RECIPES, SMOKE, SR, make_pr, ok, recipe, wav


@pytest.mark.parametrize("features", [None, "hidden_states"])
def test_finetune_features(features, tmp_path, tiny_hubert):
    """finetune reads the last layer by default (the authors' -s last_hidden_state)."""
    data = make_pr(tmp_path / "pr_data")
    exp = tmp_path / "ft"
    extra = ["--features", features] if features else []
    ok(recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, *extra, *SMOKE))
    states = files.load(exp / "dev-best.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["Args"].upstream_feature_selection == (features or "last_hidden_state")
    assert states["Args"].upstream_trainable
    # the weighted sum has one weight per layer; the last layer alone has none
    assert ("weights" in states["Featurizer"]) == (features == "hidden_states")
    if features == "hidden_states":
        assert states["Featurizer"]["weights"].numel() == 3  # CNN output + 2 layers of the tiny HuBERT
    assert (exp / "theta_prime.pt").is_file()


def test_features_refused(tmp_path, tiny_hubert):
    data = make_pr(tmp_path / "pr_data")
    cases = [(["finetune", "--ckpt", tiny_hubert, "--features", "layer3"], "--features must be last_hidden_state or hidden_states"),
             (["evaluate", "--ckpt", tiny_hubert, "--features", "last_hidden_state"], "--features applies to finetune")]
    for args, message in cases:
        proc = recipe("pr", *args, "--data", data, "--exp", tmp_path / "e")
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
        assert not (tmp_path / "e").exists()


# ---- ER: an IEMOCAP release tree, prepare/iemocap.py, five folds ---------------------------------

PREPARE = RECIPES / "prepare"
EMOTIONS = ["neu", "hap", "exc", "ang", "sad", "fru", "xxx"]


def make_iemocap(root, per_session=4):
    """IEMOCAP_full_release in miniature: Session1..5, EmoEvaluation text, sentences/wav."""
    for n in range(1, 6):
        session = root / f"Session{n}"
        dialog = f"Ses0{n}F_impro01"
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for i in range(per_session + 2):
            gender = "FM"[i % 2]
            utt = f"{dialog}_{gender}{i:03d}"
            label = EMOTIONS[(n + i) % len(EMOTIONS)] if i < per_session else "fru"
            lines += [f"[{i * 2.0:.4f} - {i * 2.0 + 1.5:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]",
                      "C-E2:\tNeutral;\t()", ""]
            if i != 1 or n != 3:  # one labelled turn without its wav: left out, counted
                wav(session / "sentences" / "wav" / dialog / f"{utt}.wav", 0.5, 150 + 40 * i + 10 * n, seed=i)
        (session / "dialog" / "EmoEvaluation").mkdir(parents=True, exist_ok=True)
        (session / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(lines) + "\n")
    return root


def run_prepare(script, *args):
    return subprocess.run([sys.executable, str(PREPARE / script), *map(str, args)], text=True,
                          capture_output=True, timeout=120)


def test_iemocap_meta_data_read_by_s3prl(tmp_path):
    from s3prl.downstream.emotion.dataset import IEMOCAPDataset

    root = make_iemocap(tmp_path / "IEMOCAP_full_release")
    proc = ok(run_prepare("iemocap.py", root))
    assert "Session3: " in proc.stdout and "1 labelled turns without a wav file left out" in proc.stdout
    meta = root / "meta_data"
    everything = []
    for n in range(1, 6):
        test = json.loads((meta / f"Session{n}" / "test_meta_data.json").read_text())
        train = json.loads((meta / f"Session{n}" / "train_meta_data.json").read_text())
        assert test["labels"] == {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
        assert {x["path"].split("/")[0] for x in test["meta_data"]} == {f"Session{n}"}
        assert f"Session{n}" not in {x["path"].split("/")[0] for x in train["meta_data"]}
        assert {x["label"] for x in test["meta_data"] + train["meta_data"]} <= set(test["labels"])
        everything += test["meta_data"]
        data = IEMOCAPDataset(str(root), str(meta / f"Session{n}" / "test_meta_data.json"), pre_load=False)
        audio, label, name = data[0]
        assert audio.ndim == 1 and audio.size == 8000 and label == test["labels"][test["meta_data"][0]["label"]]
    # by hand: sessions n, turns i < 4 with EMOTIONS[(n+i)%7] in the four classes (exc -> hap), wav present
    want = [(n, i) for n in range(1, 6) for i in range(4)
            if EMOTIONS[(n + i) % 7] in ("neu", "hap", "exc", "ang", "sad") and (n, i) != (3, 1)]
    assert len(everything) == len(want)
    first = everything[0]
    assert first["speaker"] == "Ses01F" and first["path"].startswith("Session1/sentences/wav/Ses01F_impro01/")
    exc = [x for x in everything if x["path"].endswith("Ses02F_impro01_F000.wav")]  # labelled exc
    assert [x["label"] for x in exc] == ["hap"]
    assert [x["speaker"] for x in everything if x["path"].endswith("M001.wav")][:1] == ["Ses01M"]

    proc = run_prepare("iemocap.py", tmp_path / "nothing")
    assert proc.returncode == 1 and proc.stderr.startswith("speechft: error:") and "no such folder" in proc.stderr


def test_er_one_fold_and_missing_fold_file(tmp_path, tiny_hubert):
    root = make_iemocap(tmp_path / "iemocap")
    ok(run_prepare("iemocap.py", root))
    exp = tmp_path / "er"
    ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, "--fold", "fold2", *SMOKE))
    results = json.loads((exp / "results.json").read_text())
    assert results["fold"] == "fold2" and "folds" not in results
    truth = (exp / "test_fold2_truth.txt").read_text().split()
    assert truth and all(name.startswith("Ses02") for name in truth[::2])
    # five folds (the default) check every fold's files before the first run
    (root / "meta_data" / "Session4" / "test_meta_data.json").unlink()
    proc = recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", tmp_path / "er2", *SMOKE)
    assert proc.returncode == 1 and "missing meta_data/Session4/test_meta_data.json" in proc.stderr
    assert not (tmp_path / "er2").exists()
    proc = recipe("er", "finetune", "--ckpt", tiny_hubert, "--data", root, "--exp", tmp_path / "er3", "--fold", "all")
    assert proc.returncode == 1 and "finetune takes one fold" in proc.stderr


def test_fold_mean(tmp_path):
    rows = []
    for n, value in enumerate((0.5, 0.25, 1.0, 0.0, 0.75), 1):
        row = {"task": "er", "metric": "acc", "value": value, "split": "test", "encoder_ckpt": "/m.pt",
               "upstream": "speechft_hubert", "fold": f"fold{n}", "runner_ckpt": f"/f{n}/dev-best.ckpt"}
        (tmp_path / f"f{n}.json").write_text(json.dumps(row))
        rows.append(tmp_path / f"f{n}.json")
    tool = [sys.executable, str(RECIPES / "recipe_tool.py"), "folds", "--output", tmp_path / "out.json"]
    ok(subprocess.run([*map(str, tool), *map(str, rows)], text=True, capture_output=True))
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["value"] == 0.5 and out["folds"]["fold3"] == 1.0 and "runner_ckpt" not in out
    bad = json.loads(rows[1].read_text()) | {"encoder_ckpt": "/other.pt"}
    rows[1].write_text(json.dumps(bad))
    proc = subprocess.run([*map(str, tool), *map(str, rows)], text=True, capture_output=True)
    assert proc.returncode == 1 and "f2.json: encoder_ckpt '/other.pt' differs" in proc.stderr


@pytest.mark.slow
def test_er_five_folds(tmp_path, tiny_hubert):
    root = make_iemocap(tmp_path / "iemocap")
    ok(run_prepare("iemocap.py", root))
    exp = tmp_path / "er"
    proc = ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, *SMOKE))
    results = json.loads((exp / "results.json").read_text())
    per_fold = [json.loads((exp / f"fold{n}" / "results.json").read_text()) for n in range(1, 6)]
    assert [r["fold"] for r in per_fold] == [f"fold{n}" for n in range(1, 6)]
    assert results["folds"] == {f"fold{n}": r["value"] for n, r in enumerate(per_fold, 1)}
    assert results["value"] == pytest.approx(sum(r["value"] for r in per_fold) / 5)
    assert results["task"] == "er" and results["metric"] == "acc" and results["fold"] == "mean"
    for n, r in enumerate(per_fold, 1):  # each fold tested on its own session
        truth = (exp / f"fold{n}" / f"test_fold{n}_truth.txt").read_text().split()
        assert truth and all(name.startswith(f"Ses0{n}") for name in truth[::2])
    assert "mean test acc of 5 folds" in proc.stderr
    # a rerun keeps finished folds and runs the missing one
    (exp / "results.json").unlink()
    shutil.rmtree(exp / "fold5")
    proc = ok(recipe("er", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, *SMOKE))
    assert proc.stderr.count("done before") == 4 and "fold5 of 5" in proc.stderr
    assert json.loads((exp / "results.json").read_text())["folds"]["fold1"] == per_fold[0]["value"]


# ---- ASR: bucket files for a fresh LibriSpeech download --------------------------------------------

def test_librispeech_bucket_files_then_asr(tmp_path, tiny_hubert):
    from tests.test_recipes import make_asr

    root = make_asr(tmp_path / "LibriSpeech")
    shutil.rmtree(root / "len_for_bucket")  # a fresh download has none
    wav(root / "dev-clean" / "1" / "2" / "1-2-0009.flac", 1.0, 300)  # a longer one: listed first
    (root / "dev-clean" / "1" / "2" / "1-2.trans.txt").write_text(
        (root / "dev-clean" / "1" / "2" / "1-2.trans.txt").read_text() + "1-2-0009 LONGER ONE\n")
    import pandas as pd

    ok(run_prepare("librispeech.py", root, "-o", tmp_path / "buckets"))
    table = pd.read_csv(tmp_path / "buckets" / "dev-clean.csv")
    assert table["file_path"].tolist()[0] == "dev-clean/1/2/1-2-0009.flac"
    assert table["length"].tolist() == [16000, 9600, 9600]
    assert sorted(p.name for p in (tmp_path / "buckets").iterdir()) == ["dev-clean.csv", "test-clean.csv",
                                                                       "train-clean-100.csv"]
    exp = tmp_path / "asr"
    proc = ok(recipe("asr", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, *SMOKE))
    assert "writing" in proc.stderr and (root / "len_for_bucket" / "test-clean.csv").is_file()
    assert json.loads((exp / "results.json").read_text())["metric"] == "wer"
    ref = (exp / "test-clean-noLM-ref.ark").read_text()
    assert "TONES AND NOISE" in ref or "HELLO WORLD" in ref


# ---- TED-LIUM 3 (asr_ted) ---------------------------------------------------------------------------

TALK_TEXT = [  # (start, end, label, words): what a TED-LIUM 3 STM line holds
    (0.0, 1.2, "<o,f0,male>", "i 've been to well-known places"),
    (1.3, 2.5, "<o,f0,male>", "so this is <unk> here"),
    (2.6, 3.0, "<o,f0,male>", "too short"),
    (3.0, 4.3, "<o,f0,male>", "ignore_time_segment_in_scoring"),
    (4.3, 5.6, "<o,f0,male>", "that's what (laughter) we do"),
]


def make_tedlium(root, talks=None):
    """TEDLIUM_release-3 in miniature: NIST SPHERE audio and STM segments per talk."""
    import soundfile

    talks = talks or {"data": ["TalkA_2010", "TalkB_2011"], "legacy/dev": ["TalkC_2012"], "legacy/test": ["TalkD_2013"]}
    for split, names in talks.items():
        for k, talk in enumerate(names):
            t = np.arange(int(SR * 6.0)) / SR
            audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * k) * t) + np.random.default_rng(k).normal(0, 0.05, t.size)
            (root / split / "sph").mkdir(parents=True, exist_ok=True)
            (root / split / "stm").mkdir(parents=True, exist_ok=True)
            soundfile.write(str(root / split / "sph" / f"{talk}.sph"), audio.astype("float32"), SR,
                            format="NIST", subtype="PCM_16")
            lines = [f"{talk} 1 {talk} {s:.2f} {e:.2f} {label} {words}" for s, e, label, words in TALK_TEXT]
            (root / split / "stm" / f"{talk}.stm").write_text("\n".join(lines) + "\n")
    return root


def test_tedlium_dataset(tmp_path):
    import soundfile
    from s3prl.downstream.asr_ted import dataset, expert

    root = make_tedlium(tmp_path / "TEDLIUM_release-3")
    assert soundfile.info(str(root / "data" / "sph" / "TalkA_2010.sph")).format == "NIST"
    assert dataset.normalise("i 've been to well-known places") == "I'VE BEEN TO WELL KNOWN PLACES"
    assert dataset.normalise("that's what (laughter) we do") == "THAT'S WHAT LAUGHTER WE DO"
    vocab = expert.vocabulary()
    assert len(vocab.symbols) == 32 and vocab.bos() == 0 and vocab.index("|") == 4 and vocab.index("Z") == 31
    datarc = {"train": ["data"], "dev": ["legacy/dev"], "test": ["legacy/test"]}
    train = dataset.TedliumDataset("train", 1, vocab, str(root), **datarc)
    # per talk: segments 0 and 4 (1-60 s, no <unk>, not ignored); two talks
    names = sorted(name for batch in train.X for name in (s.name for s in batch))
    assert len(names) == 4 and all(n.startswith(("TalkA_2010-", "TalkB_2011-")) for n in names)
    wavs, labels, files = train[0]
    assert wavs[0].shape == (int(1.3 * SR),) and wavs[0].dtype == np.float32
    text = vocab.string(labels[0].tolist()).replace(" ", "").replace("|", " ")
    assert text in ("I'VE BEEN TO WELL KNOWN PLACES", "THAT'S WHAT LAUGHTER WE DO")
    # the authors' subset: segments in talk order until the total passes the budget (here 2 s)
    subset = dataset.TedliumDataset("train", 1, vocab, str(root), train_hours=2 / 3600, **datarc)
    assert sorted(s.name for batch in subset.X for s in batch) == ["TalkA_2010-000000.00-000001.20",
                                                                  "TalkA_2010-000004.30-000005.60"]
    assert len(dataset.TedliumDataset("train", 1, vocab, str(root), drop_unk=False, **datarc)) == 6
    (root / "legacy" / "test" / "sph" / "TalkD_2013.sph").unlink()
    with pytest.raises(SpeechFTError, match=r"TalkD_2013\.sph: missing"):
        dataset.TedliumDataset("test", 1, vocab, str(root), **datarc)


def test_asr_ted_finetune_subset(tmp_path, tiny_hubert):
    root = make_tedlium(tmp_path / "TEDLIUM_release-3")
    exp = tmp_path / "ft"
    proc = ok(recipe("asr_ted", "finetune", "--ckpt", tiny_hubert, "--data", root, "--exp", exp,
                     "--train-hours", "0.001", *SMOKE))
    assert "[asr_ted] - train: 3 segments" in proc.stdout  # 1.2 + 1.3 + 1.2 s passes 0.001 h = 3.6 s
    picked = exp / "dev-best.ckpt" if (exp / "dev-best.ckpt").exists() else exp / "states-2.ckpt"
    assert f"(from {picked.name})" in proc.stderr  # a random head rarely beats WER 100 on dev
    states = files.load(picked, allowed=files.RUNNER_ALLOWED)
    assert states["Args"].downstream == "asr_ted" and states["Args"].upstream_feature_selection == "last_hidden_state"
    assert states["Config"]["downstream_expert"]["datarc"]["train_hours"] == 0.001
    head = states["Downstream"]
    assert head["model.linear.weight"].shape[0] == 32  # the character vocabulary
    assert sum(1 for k in head if k.endswith("weight_ih_l0")) == 3  # three BLSTM layers
    assert files.read_encoder(exp / "theta_prime.pt")[1] == "hubert"
    ref = (exp / "dev-noLM-ref.ark").read_text()
    assert "I'VE BEEN TO WELL KNOWN PLACES" in ref and "UNK" not in ref


def test_asr_ted_evaluate(tmp_path, tiny_hubert):
    root = make_tedlium(tmp_path / "TEDLIUM_release-3")
    exp = tmp_path / "eval"
    ok(recipe("asr_ted", "evaluate", "--ckpt", tiny_hubert, "--data", root, "--exp", exp, *SMOKE))
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "asr_ted" and results["metric"] == "wer" and results["split"] == "test"
    assert results["higher_is_better"] is False and results["value"] >= 0
    hyp = (exp / "test-noLM-hyp.ark").read_text().splitlines()
    assert len(hyp) == 2 and all(line.startswith("TalkD_2013-") for line in hyp)
    proc = recipe("asr_ted", "evaluate", "--ckpt", tiny_hubert, "--data", tmp_path, "--exp", tmp_path / "e2")
    assert proc.returncode == 1 and "missing data/sph" in proc.stderr


@pytest.mark.parametrize("task, option", [("asr_ted", "--train-hours"), ("er", "--fold"), ("pr", "--features")])
def test_help_names_the_new_options(task, option):
    proc = ok(recipe(task, "-h"))
    assert option in proc.stdout and "finetune" in proc.stdout and "evaluate" in proc.stdout
