"""Bad input: the README lists every refusal, and the refusals a new user met name what is missing."""

import json
import subprocess

import pytest

from tests import refusals
from tests.conftest import REPO, run_py

START, END = "<!-- refusals:start -->", "<!-- refusals:end -->"


def test_readme_lists_every_refusal():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert START in text and END in text
    listed = {ln for ln in text.split(START)[1].split(END)[0].splitlines() if ln.startswith("| ")}
    wanted = set(refusals.table().splitlines()[2:])
    missing, stale = sorted(wanted - listed), sorted(listed - wanted - {refusals.table().splitlines()[0]})
    assert not missing and not stale, (
        "README.md's refusal table is out of date: run `python -m tests.refusals --write`"
        f".\nmissing: {missing[:10]}\nstale: {stale[:10]}")
    assert len(wanted) > 150


def one_line(proc):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("speechft: error: "), proc.stderr
    return lines[0]


def speechft(*args):
    return run_py(["-m", "speechft_upstream.cli", *map(str, args)])


def test_corpus_into_a_folder_that_is_not_a_corpus(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my own files\n")
    line = one_line(speechft("corpus", "--out", out, "--size", "tiny"))
    assert line == (f"speechft: error: {out}/corpus.json: not found, so {out} (not empty) is not a speechft corpus; "
                    "choose an empty or new folder, or use --force to replace it")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "registry.json"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert (out / "notes.txt").read_text() == "my own files\n"


def test_analyze_with_no_audio(tmp_path, tiny_hubert):
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "readme.txt").write_text("no audio here\n")
    line = one_line(speechft("analyze", "--base", tiny_hubert, "--models", tiny_hubert, "--audio",
                             tmp_path / "audio", "-o", tmp_path / "out"))
    assert line == f"speechft: error: {tmp_path / 'audio'}: no .wav or .flac files in it (searched sub-folders too)"
    assert not (tmp_path / "out").exists()


def recipe(task, *args):
    return subprocess.run(["bash", REPO / "downstream_recipes" / f"{task}.sh", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("task, files, missing", [
    ("pr", ["train.csv", "dev.csv"], "test.csv"),
    ("ic", ["data/train_data.csv", "data/valid_data.csv"], "data/test_data.csv"),
    ("ks", ["train/yes/a.wav"], "test"),
    ("er", ["meta_data/Session1/train_meta_data.json"], "meta_data/Session1/test_meta_data.json"),
    ("asr", ["train-clean-100/x", "dev-clean/x", "len_for_bucket/train-clean-100.csv",
             "len_for_bucket/dev-clean.csv", "len_for_bucket/test-clean.csv"], "test-clean"),
])
def test_evaluate_with_a_split_missing(tmp_path, tiny_hubert, task, files, missing):
    data = tmp_path / "data"
    for name in files:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("")
    line = one_line(recipe(task, "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "exp"))
    assert line.startswith(f"speechft: error: {data}: missing {missing} ({task.upper()} data layout"), line
    assert not (tmp_path / "exp").exists()


def test_er_checks_the_chosen_fold(tmp_path, tiny_hubert):
    data = tmp_path / "data"
    for name in ("Session1/train_meta_data.json", "Session1/test_meta_data.json"):
        (data / "meta_data" / name).parent.mkdir(parents=True, exist_ok=True)
        (data / "meta_data" / name).write_text(json.dumps({"labels": {}, "meta_data": []}))
    line = one_line(recipe("er", "evaluate", "--fold", "fold2", "--ckpt", tiny_hubert, "--data", data,
                           "--exp", tmp_path / "exp"))
    assert f"missing meta_data/Session2/train_meta_data.json" in line


def test_recipe_given_the_wrong_data_layout(tmp_path, tiny_hubert):
    """A speechft corpus root (or another task's folder) instead of the task's own folder."""
    root = tmp_path / "corpus"
    (root / "pr").mkdir(parents=True)
    for name in ("train.csv", "dev.csv", "test.csv"):
        (root / "pr" / name).write_text("")
    line = one_line(recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", root, "--exp", tmp_path / "exp"))
    assert line.startswith(f"speechft: error: {root}: missing train.csv (PR data layout"), line
    line = one_line(recipe("ic", "finetune", "--ckpt", tiny_hubert, "--data", root / "pr", "--exp", tmp_path / "e2"))
    assert line.startswith(f"speechft: error: {root / 'pr'}: missing data/train_data.csv (IC data layout"), line
