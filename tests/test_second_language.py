"""`speechft corpus --language cmn` and the benchmark's unsupervised stages (stage_unsupervised.py):
the Mandarin corpus read by s3prl's own ctc dataset and pr.sh, its phonemes Mandarin, its
speakers disjoint; θ0's continued pre-training on it written, loadable and cached."""

import csv
import json
import subprocess
import sys

import pytest
import torch

pytest.importorskip("espeakng_loader")

from speechft_upstream.benchmark import stage_unsupervised as su  # noqa: E402
from speechft_upstream.data import language  # noqa: E402
from tests.conftest import REPO, assert_ok, corpus_digest, run_py  # noqa: E402

TONES = {"55", "35", "214", "51", "11"}


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    """The smoke size's corpus stage (`speechft corpus --language cmn --size tiny` underneath)."""
    work = tmp_path_factory.mktemp("work")
    return work, su.stage_language_corpus(work, "smoke", 3)


def rows(info, split):
    with open(f"{info['dir']}/pr/{split}.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_exports():
    assert su.LANGUAGE == "cmn" and su.PR_TASK == "PR_CMN" and su.ENCODER_NAME == "theta_prime_unsup_cmn"
    assert set(su.UNSUPERVISED_BUDGET) == {"full", "quick", "smoke", "superb"} and su.UNSUPERVISED_BUDGET["superb"] is None
    for budget in filter(None, su.UNSUPERVISED_BUDGET.values()):
        assert budget["targets"] in ("theta0", "current") and budget["steps"] > 0


def test_corpus_stage_outputs_and_reuse(lang):
    work, info = lang
    assert info["language"] == "cmn" and info["dir"] == str((work / "corpus_cmn" / "data").resolve())
    assert info["audio"] == info["dir"] + "/unlabelled" and info["minutes"] > 0.1
    manifest = json.loads((work / "corpus_cmn" / "data" / "corpus.json").read_text())
    unlabelled = [u for u in manifest["utterances"] if u["task"] == "unlabelled"]
    assert info["utterances"] == manifest["counts"] and info["utterances"]["unlabelled"] == len(unlabelled) == 6
    from speechft_upstream.finetune.audio_data import find_audio

    assert len(find_audio(info["audio"])) == len(unlabelled)
    again = su.stage_language_corpus(work, "smoke", 3)
    assert again["_reused"] and again["dir"] == info["dir"]


def test_pr_layout_read_by_s3prls_ctc_dataset(lang):
    import s3prl.downstream.ctc.expert  # noqa: F401  (as the runner does: speechft's hook adds the corpus package)
    from s3prl.downstream.ctc.data import load_dataset
    from s3prl.downstream.ctc.text import load_text_encoder

    _, info = lang
    phones = f"{info['dir']}/pr/phones.txt"
    tokenizer = load_text_encoder("word", phones)
    inventory = set(open(phones).read().split())
    for split in ("train", "dev", "test"):
        table = rows(info, split)
        assert table and all(set(r["phonemes"].split()) <= inventory for r in table)
        loader = load_dataset(split, tokenizer, {"name": "libriphone", "csv_dir": f"{info['dir']}/pr", "train": "train.csv",
                                                 "dev": "dev.csv", "test": "test.csv", "bucketing": True,
                                                 "batch_size": 2, "num_workers": 0})
        wavs, labels, _ = next(iter(loader))
        assert wavs[0].ndim == 1 and wavs[0].size > 16000 * 0.5
        assert tokenizer.unk_idx not in labels[0]


def test_phonemes_are_espeaks_mandarin(lang):
    from speechft_upstream.data.espeak import Engine

    _, info = lang
    table = rows(info, "train") + rows(info, "test")
    inventory = set(open(f"{info['dir']}/pr/phones.txt").read().split())
    assert TONES & inventory and {"ts.", "tS;"} & inventory  # tones, retroflex / alveolo-palatal affricates
    assert "|" not in inventory and not any(p.startswith("(") for p in inventory)
    engine = Engine()
    for row in table[:4]:
        assert all("\u4e00" <= ch <= "\u9fff" for ch in row["transcription"])  # Chinese characters only
        engine.set_voice("cmn")
        assert row["phonemes"].split() == language.phone_tokens(engine.phonemes(row["transcription"]))
        assert any(p in TONES for p in row["phonemes"].split())
        engine.set_voice("en-us")  # an English voice only spells "Chinese letter" for each character
        english = {p for word in engine.phonemes(row["transcription"]) for p in word}
        assert english and not english & TONES and english != set(row["phonemes"].split())


def test_speakers_disjoint_between_splits(lang):
    work, info = lang
    speakers = {split: {r["speaker"] for r in rows(info, split)} for split in ("train", "dev", "test")}
    assert all(speakers.values())
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    manifest = json.loads((work / "corpus_cmn" / "data" / "corpus.json").read_text())
    unlabelled = {str(u["speaker"]) for u in manifest["utterances"] if u["task"] == "unlabelled"}
    assert unlabelled <= speakers["train"]  # continued pre-training never hears a PR dev or test speaker


def test_deterministic_and_reused(lang, tmp_path):
    _, info = lang
    again = language.generate(tmp_path / "again", "cmn", seed=3, size="tiny", workers=2)
    assert corpus_digest(info["dir"]) == corpus_digest(tmp_path / "again")
    assert language.generate(tmp_path / "again", "cmn", seed=3, size="tiny") == again
    assert language.plan("cmn", 4, "tiny")["jobs"][0]["text"] != language.plan("cmn", 3, "tiny")["jobs"][0]["text"]


def test_cli_refusals(tmp_path, capsys):
    from speechft_upstream import cli

    cases = [(["--language", "xx", "--out", tmp_path / "a"], "--language xx: no second-language corpus for it; available: cmn"),
             (["--language", "en", "--out", tmp_path / "b"], "(English is the corpus without --language)"),
             (["--language", "cmn", "--music", tmp_path / "c"], "--language: goes with --out")]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_text("not a corpus")
    cases.append((["--language", "cmn", "--out", tmp_path / "d"], "corpus.json: not found"))
    for args, message in cases:
        assert cli.main(["corpus", *map(str, args)]) == 1
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("speechft: error:")]
        assert len(lines) == 1 and message in lines[0], (args, lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"] and [p.name for p in (tmp_path / "d").iterdir()] == ["x.txt"]


def test_unsupervised_stage_writes_a_loadable_theta_prime_and_caches(lang, tiny_hubert):
    from speechft_upstream.pretrain.data import sha256_of

    work, info = lang
    theta0 = {"path": str(tiny_hubert), "sha256": sha256_of(tiny_hubert), "source": "make-tiny"}
    out = su.stage_unsupervised(work, "smoke", info, theta0, "cpu")
    assert out["path"] == str((work / "unsupervised_cmn" / "theta_prime.pt").resolve()) and not out["_reused"]
    assert out["language"] == "cmn" and out["steps"] == su.UNSUPERVISED_BUDGET["smoke"]["steps"]
    assert out["seconds"] > 0 and out["targets"] == "theta0"
    check = run_py(["-m", "speechft_upstream.cli", "check", out["path"]], cwd=REPO, timeout=120)
    assert_ok(check)
    assert "hubert checkpoint" in check.stdout
    w0 = torch.load(tiny_hubert, weights_only=True)["model_weight"]
    w1 = torch.load(out["path"], weights_only=True)["model_weight"]
    assert set(w0) == set(w1)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if k.startswith("encoder."))
    assert torch.equal(w0["label_embs_concat"], w1["label_embs_concat"])  # frozen codebook
    again = su.stage_unsupervised(work, "smoke", info, theta0, "cpu")
    assert again["_reused"] and again["path"] == out["path"]


def test_no_budget_at_the_superb_size(lang):
    from speechft_upstream.errors import SpeechFTError

    work, info = lang
    with pytest.raises(SpeechFTError, match="no unsupervised fine-tuning budget"):
        su.stage_unsupervised(work, "superb", info, {"path": "x"}, "cpu")
    with pytest.raises(SpeechFTError, match="benchmark size superb: no synthetic cmn corpus"):
        su.stage_language_corpus(work, "superb", 0)


def test_pr_recipe_finetunes_and_evaluates_on_it(lang, tiny_hubert, tmp_path):
    _, info = lang
    smoke = ["--steps", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu"]

    def recipe(*args):
        proc = subprocess.run(["bash", str(REPO / "downstream_recipes" / "pr.sh"), *map(str, args)], text=True,
                              capture_output=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1",
                                                                      "PYTHON": sys.executable})
        assert_ok(proc)

    data = f"{info['dir']}/pr"
    recipe("finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "ft", *smoke)
    assert (tmp_path / "ft" / "theta_prime.pt").is_file()
    recipe("evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "ev", *smoke)
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["metric"] == "per" and results["split"] == "test" and results["value"] >= 0


def test_speechft_score_reads_the_second_languages_pr(tmp_path):
    """--paper's results.json holds PR_CMN rows: `speechft score` with the mini references scores
    them (FBANK measured, PER 0 perfect) instead of refusing the task."""
    rows_ = [{"encoder": e, "task": "PR_CMN", "metric": "PER", "value": v, "split": "test"}
             for e, v in (("fbank", 60.0), ("theta0", 45.0))]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(rows_))
    out = tmp_path / "scores.json"
    proc = run_py(["-m", "speechft_upstream.cli", "score", str(results), "--references",
                   str(REPO / "speechft_upstream/evaluate/mini_superb_references.yaml"), "--tasks", "PR_CMN",
                   "--json", str(out)])
    assert_ok(proc)
    scores = json.loads(out.read_text())
    assert scores["scores"] == {"fbank": pytest.approx(0.0), "theta0": pytest.approx(250.0)}
