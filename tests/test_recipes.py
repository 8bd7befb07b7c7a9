"""downstream_recipes/*.sh on tiny corpora in each task's s3prl layout (tones and noise)."""

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from speechft_upstream.checkpoints import files
from tests.conftest import REPO

RECIPES = REPO / "downstream_recipes"
SR = 16000
SMOKE = ["--steps", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu"]


def wav(path, seconds=0.5, freq=220.0, seed=0):
    import soundfile

    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype("float32"), SR)
    return path


# ---- tiny corpora, one per task, in the layout each recipe documents --------------------------

def make_pr(root):
    rows = {"train": 4, "dev": 2, "test": 2}
    phones = ["AA1 B K", "IY0 S T", "SH OW1", "M AE1 N"]
    for split, n in rows.items():
        lines = ["wav_path,phonemes"]
        for i in range(n):
            wav(root / "wavs" / f"{split}{i}.wav", 0.6, 200 + 60 * i, seed=i)
            lines.append(f"wavs/{split}{i}.wav,{phones[i % len(phones)]}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def make_asr(root):
    words = ["HELLO WORLD", "A TEST", "TONES AND NOISE", "IT'S FINE"]
    for split, n in {"train-clean-100": 4, "dev-clean": 2, "test-clean": 2}.items():
        rows = ["file_path,length"]
        chapter = root / split / "1" / "2"
        trans = []
        for i in range(n):
            rel = f"{split}/1/2/1-2-{i:04d}.flac"
            wav(root / rel, 0.6, 250 + 40 * i, seed=i)
            rows.append(f"{rel},{int(0.6 * SR)}")
            trans.append(f"1-2-{i:04d} {words[i % len(words)]}")
        (chapter / "1-2.trans.txt").write_text("\n".join(trans) + "\n")
        (root / "len_for_bucket").mkdir(exist_ok=True)
        (root / "len_for_bucket" / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def _ks_dev(name):
    """Speech Commands' own hash split (s3prl split_dataset): True when the file goes to dev."""
    speaker = re.sub(r"_nohash_.*$", "", name)
    h = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % (2 ** 27)
    return h * (100.0 / (2 ** 27 - 1)) < 10


def make_ks(root):
    names = [f"{i:08x}_nohash_0.wav" for i in range(400)]
    dev = [n for n in names if _ks_dev(n)][:2]
    train = [n for n in names if not _ks_dev(n) and n not in dev][:2]
    for k, word in enumerate(("yes", "no")):
        for i, name in enumerate(train + dev):
            wav(root / "train" / word / name, 1.0, 300 + 200 * k + 10 * i, seed=i)
        wav(root / "test" / word / "test_nohash_0.wav", 1.0, 300 + 200 * k, seed=9)
    wav(root / "train" / "_background_noise_" / "noise.wav", 1.5, 50, seed=3)
    return root


def make_sid(root):
    lines = []
    for s, speaker in enumerate(("id10001", "id10002")):
        for i, split in enumerate((1, 1, 2, 3)):
            rel = f"{speaker}/vid{i}/{i:05d}.wav"
            wav(root / ("test" if split == 3 else "dev") / "wav" / rel, 0.6, 180 + 150 * s, seed=i)
            lines.append(f"{split} {rel}")
    (root / "iden_split.txt").write_text("\n".join(lines) + "\n")
    return root


def make_er(root):
    labels = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
    items = []
    for i, label in enumerate(list(labels) * 2):
        rel = f"Session{1 + i % 2}/sentences/wav/utt{i}.wav"
        wav(root / rel, 0.5, 150 + 70 * labels[label], seed=i)
        items.append({"path": rel, "label": label, "speaker": f"Ses0{1 + i % 2}F"})
    for fold in range(1, 6):
        meta = root / "meta_data" / f"Session{fold}"
        meta.mkdir(parents=True)
        test = [x for x in items if x["path"].startswith("Session1")]
        train = [x for x in items if not x["path"].startswith("Session1")] + test[:1]
        for name, part in (("train", train), ("test", test)):
            (meta / f"{name}_meta_data.json").write_text(json.dumps({"labels": labels, "meta_data": part}))
    return root


def make_ic(root):
    header = "path,speakerId,transcription,action,object,location"
    intents = [("activate", "lights", "kitchen"), ("deactivate", "music", "none")]
    for split, n in (("train", 4), ("valid", 2), ("test", 2)):
        rows = [header]
        for i in range(n):
            action, obj, loc = intents[i % 2]
            rel = f"wavs/speakers/s{i}/{split}{i}.wav"
            wav(root / rel, 0.5, 240 + 120 * (i % 2), seed=i)
            rows.append(f"{rel},s{i},{action} the {obj},{action},{obj},{loc}")
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"{split}_data.csv").write_text("\n".join(rows) + "\n")
    return root


CORPORA = {"pr": make_pr, "asr": make_asr, "ks": make_ks, "sid": make_sid, "er": make_er, "ic": make_ic}
METRICS = {"pr": ("per", "test"), "asr": ("wer", "test-clean"), "ks": ("acc", "test"),
           "sid": ("acc", "test"), "er": ("acc", "test"), "ic": ("acc", "test")}


def recipe(task, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the CPU is shared: no thread oversubscription
    return subprocess.run(["bash", str(RECIPES / f"{task}.sh"), *map(str, args)], env=env, text=True,
                          capture_output=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def check_results(exp, task, ckpt, upstream="speechft_hubert", steps=2):
    results = json.loads((exp / "results.json").read_text())
    metric, split = METRICS[task]
    assert results["task"] == task and results["metric"] == metric and results["split"] == split
    assert results["upstream"] == upstream and results["steps"] == steps
    assert results["encoder_ckpt"] == str(Path(ckpt).resolve())
    assert isinstance(results["value"], float) and np.isfinite(results["value"])
    if metric == "acc":
        assert 0.0 <= results["value"] <= 1.0
    return results


# ---- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", sorted(CORPORA))
def test_help(task):
    proc = ok(recipe(task, "-h"))
    assert "finetune" in proc.stdout and "evaluate" in proc.stdout and "--steps" in proc.stdout


def test_pr_finetune_then_evaluate_theta_prime(tmp_path, tiny_hubert):
    data = make_pr(tmp_path / "pr_data")
    exp = tmp_path / "pr_ft"
    proc = ok(recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, "--beta", "0.5", *SMOKE))
    assert "head only for steps 1-1 (beta 0.5 of 2)" in proc.stdout + proc.stderr
    theta_prime = exp / "theta_prime.pt"
    assert (exp / "speechft.yaml").read_text().strip().endswith("beta: 0.5")

    # θ′ loads in stock s3prl, holds the runner's fine-tuned weights, and moved away from θ0
    import s3prl.hub as hub

    model = hub.hubert_local(ckpt=str(theta_prime))
    runner_ckpt = exp / "dev-best.ckpt"
    tuned = files.load(runner_ckpt, allowed=files.RUNNER_ALLOWED)["Upstream"]
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in tuned.items())
    theta0 = files.weights(*files.read_encoder(tiny_hubert))
    name = "encoder.layers.0.fc1.weight"
    assert not torch.equal(state[f"model.{name}"], theta0[name])
    assert all(torch.equal(state[f"model.{k}"], v) for k, v in theta0.items() if k.startswith("feature_extractor."))

    # and the SUPERB protocol runs on it with the stock upstream
    exp2 = tmp_path / "pr_eval"
    ok(recipe("pr", "evaluate", "--upstream", "hubert_local", "--ckpt", theta_prime, "--data", data,
              "--exp", exp2, *SMOKE))
    results = check_results(exp2, "pr", theta_prime, upstream="hubert_local")
    assert results["higher_is_better"] is False
    args = files.load(exp2 / "dev-best.ckpt", allowed=files.RUNNER_ALLOWED)["Args"]
    assert not args.upstream_trainable and args.upstream_layer_selection is None  # frozen, weighted sum


@pytest.mark.parametrize("task", ["asr", "ks", "sid", "er", "ic"])
def test_evaluate(task, tmp_path, tiny_hubert):
    data = CORPORA[task](tmp_path / f"{task}_data")
    exp = tmp_path / f"{task}_eval"
    one_fold = ["--fold", "fold1"] if task == "er" else []  # er.sh's five folds: test_recipes_paper.py
    ok(recipe(task, "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, *one_fold, *SMOKE))
    check_results(exp, task, tiny_hubert)
    assert not (exp / "theta_prime.pt").exists()


def test_bad_input_is_one_line(tmp_path, tiny_hubert):
    data = make_pr(tmp_path / "pr_data")
    cases = [
        (["finetune", "--data", data, "--exp", tmp_path / "e1"], "finetune needs --ckpt"),
        (["evaluate", "--ckpt", tiny_hubert, "--data", tmp_path / "nope", "--exp", tmp_path / "e2"], "no such data folder"),
        (["evaluate", "--ckpt", tiny_hubert, "--data", tmp_path, "--exp", tmp_path / "e3"], "missing train.csv"),
        (["finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "e4", "--beta", "2"], "--beta must be"),
        (["train", "--data", data], "unknown mode 'train'"),
        (["evaluate", "--bogus", "1"], "unknown option '--bogus'"),
    ]
    for args, message in cases:
        proc = recipe("pr", *args)
        assert proc.returncode != 0
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
        assert len(lines) == 1 and message in lines[0], (args, proc.stderr[-2000:])


def test_libriphone_corpus_with_lexicon(tmp_path):
    """The ctc corpus stand-in maps words to phones with a lexicon, like s3prl's libriphone."""
    from s3prl.downstream.ctc.text import WordTextEncoder

    from speechft_upstream.compat.ctc_corpus import LibriPhoneDataset
    from speechft_upstream.errors import SpeechFTError

    tokenizer = WordTextEncoder.load_from_file(str(RECIPES / "configs" / "phoneme.txt"))
    (tmp_path / "lexicon.txt").write_text("HELLO HH AH0 L OW1\nHELLO HH EH0 L OW1\nWORLD W ER1 L D\n")
    (tmp_path / "train.csv").write_text("wav_path,transcription\na.wav,HELLO WORLD\n/abs/b.wav,WORLD\n")
    data = LibriPhoneDataset("train.csv", tokenizer, 1, str(tmp_path), lexicon=[str(tmp_path / "lexicon.txt")])
    assert data[0] == (str(tmp_path / "a.wav"), tokenizer.encode("HH AH0 L OW1 W ER1 L D"))
    assert data[1][0] == "/abs/b.wav"
    buckets = LibriPhoneDataset("train.csv", tokenizer, 4, str(tmp_path), lexicon=[str(tmp_path / "lexicon.txt")])
    assert len(buckets[1]) == 2  # a bucket larger than the split holds the whole split
    (tmp_path / "dev.csv").write_text("wav_path,transcription\na.wav,GOODBYE\n")
    with pytest.raises(SpeechFTError, match="word 'GOODBYE' is in no lexicon file"):
        LibriPhoneDataset("dev.csv", tokenizer, 1, str(tmp_path), lexicon=[str(tmp_path / "lexicon.txt")])


@pytest.mark.slow
def test_pr_finetune_two_processes(tmp_path, tiny_hubert):
    """--nproc 2: torchrun, gloo on CPU, s3prl's runner under DDP; θ′ extracted as usual."""
    data = make_pr(tmp_path / "pr_data")
    exp = tmp_path / "pr_ddp"
    ok(recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, "--beta", "0.5",
              "--nproc", "2", *SMOKE))
    assert files.load(exp / "states-2.ckpt", allowed=files.RUNNER_ALLOWED)["WorldSize"] == 2
    assert files.read_encoder(exp / "theta_prime.pt")[1] == "hubert"
