"""The extra dev utterances (data/dev_extra.py): dev grows, train and test stay byte for byte."""

import hashlib
import json

import pytest

pytest.importorskip("espeakng_loader")

from speechft_upstream.data import corpus, dev_extra, layouts  # noqa: E402

# files that list dev utterances, so they grow (the dev rows before them stay)
DEV_LISTS = {"corpus.json", "asr/bucket/dev.csv", "pr/dev.csv", "ic/data/valid_data.csv", "sid/iden_split.txt"}


def _files(folder):
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "wav.scp":  # SD's Kaldi lists hold absolute paths
                data = data.replace(str(folder.resolve()).encode(), b"OUT")
            out[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("dev_extra")
    without = corpus.generate(root / "without", seed=5, size="tiny", workers=2, dev_extra=False)
    with_ = corpus.generate(root / "with", seed=5, size="tiny", workers=2)
    return root / "without", without, root / "with", with_


def test_train_and_test_files_unchanged(pair):
    a_dir, a, b_dir, b = pair
    fa, fb = _files(a_dir), _files(b_dir)
    extra = [u for u in b["utterances"] if u.get("extra_dev")]
    assert extra and all(u["split"] == "dev" for u in extra)
    assert [u for u in b["utterances"] if not u.get("extra_dev")] == a["utterances"]
    assert set(fb) - set(fa) == {u["path"] for u in extra} | {"er/meta_data/Session1/dev_meta_data.json"}
    changed = {k for k in fa if fa[k] != fb.get(k)}
    # the transcript files of the dev speakers hold their extra sentences; nothing else changes
    assert changed - DEV_LISTS == {k for k in changed if k.startswith("asr/LibriSpeech/dev/") and k.endswith(".trans.txt")}
    for name in DEV_LISTS - {"corpus.json"}:
        old, new = (a_dir / name).read_text().splitlines(), (b_dir / name).read_text().splitlines()
        if name == "sid/iden_split.txt":
            assert [x for x in new if not x.startswith("2 ")] == [x for x in old if not x.startswith("2 ")]
        assert new[:len(old)] == old and len(new) > len(old), name


def test_pretraining_lists_unchanged(pair):
    from speechft_upstream.pretrain.data import read_corpus

    a_dir, _, b_dir, _ = pair
    _, _, train_a, dev_a = read_corpus(a_dir)
    _, _, train_b, dev_b = read_corpus(b_dir)
    assert [u["path"] for u in train_a] == [u["path"] for u in train_b]
    assert [u["path"] for u in dev_a] == [u["path"] for u in dev_b]


def test_er_dev_gets_the_extra_list_and_training_stays(pair, tmp_path):
    from s3prl.downstream.emotion.expert import DownstreamExpert  # the startup hook adds the list

    a_dir, _, b_dir, b = pair
    n_extra = sum(1 for u in b["utterances"] if u.get("extra_dev") and u["task"] == "er")
    experts = []
    for folder in (a_dir, b_dir):
        config = {"datarc": {"root": str(folder / "er"), "meta_data": str(folder / "er" / "meta_data"),
                             "test_fold": "fold1", "pre_load": False, "train_batch_size": 2, "eval_batch_size": 2,
                             "num_workers": 0, "valid_ratio": 0.2},
                  "modelrc": {"projector_dim": 8, "select": "UtteranceLevel",
                              "UtteranceLevel": {"pooling": "MeanPooling"}}}
        experts.append(DownstreamExpert(16, config, str(tmp_path)))
    plain, extended = experts
    assert list(plain.train_dataset.indices) == list(extended.train_dataset.indices)
    assert len(extended.dev_dataset) == len(plain.dev_dataset) + n_extra > len(plain.dev_dataset)
    assert len(extended.test_dataset) == len(plain.test_dataset)


def _dev_counts(layout):
    counts = {}
    for job in layout["jobs"]:
        if job["split"] == "dev":
            counts[job["task"]] = counts.get(job["task"], 0) + 1
    return counts


@pytest.mark.parametrize("size,expected", [
    ("default", {"asr": 200, "sid": 840, "ks": 840, "ic": 840, "er": 960}),
    ("quick", {"asr": 102, "sid": 420, "ks": 432, "ic": 420, "er": 312}),
])
def test_dev_counts_and_other_jobs_unchanged(size, expected):
    full, base = corpus.plan(0, size), corpus.plan(0, size, dev_extra=False)
    for layout in (full, base):
        layouts._paths(layout)
    counts = _dev_counts(full)
    assert {t: counts[t] for t in expected} == expected
    assert [j for j in full["jobs"] if not dev_extra.is_extra(j)] == base["jobs"]
    assert full["speakers"] == base["speakers"] and full["ks_names"] == base["ks_names"]
    extra = [j for j in full["jobs"] if dev_extra.is_extra(j)]
    roles = full["roles"]
    assert {j["speaker"] for j in extra if j["task"] in ("asr", "ks", "ic")} == set(roles["dev"])
    assert {j["speaker"] for j in extra if j["task"] == "sid"} == set(roles["train"])
    assert {j["speaker"] for j in extra if j["task"] == "er"} == set(roles["train"]) | set(roles["dev"])
    labels = {t: {j.get("label") for j in base["jobs"] if j["task"] == t and j["split"] != "test"} for t in ("ks", "er")}
    assert all(j["label"] in labels[j["task"]] for j in extra if j["task"] in labels)
    assert len({j["path"] for j in full["jobs"] if "path" in j}) == sum(1 for j in full["jobs"] if "path" in j)


def test_er_extra_list_with_other_labels_is_refused(pair, tmp_path):
    import shutil

    from s3prl.downstream.emotion.expert import DownstreamExpert

    from speechft_upstream.errors import SpeechFTError

    _, _, b_dir, _ = pair
    er = tmp_path / "er"
    shutil.copytree(b_dir / "er", er)
    dev = er / "meta_data" / "Session1" / "dev_meta_data.json"
    table = json.loads(dev.read_text())
    table["labels"] = {"neutral": 0, "question": 1, "excited": 2, "sad": 3}
    dev.write_text(json.dumps(table))
    config = {"datarc": {"root": str(er), "meta_data": str(er / "meta_data"), "test_fold": "fold1", "pre_load": False,
                         "train_batch_size": 2, "eval_batch_size": 2, "num_workers": 0, "valid_ratio": 0.2},
              "modelrc": {"projector_dim": 8, "select": "UtteranceLevel", "UtteranceLevel": {"pooling": "MeanPooling"}}}
    with pytest.raises(SpeechFTError, match="dev_meta_data.json: labels .* are not those of the training list"):
        DownstreamExpert(16, config, str(tmp_path))
