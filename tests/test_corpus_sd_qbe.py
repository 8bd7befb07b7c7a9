"""speechft corpus, SD and QbE: the layouts read by s3prl 0.4.18's own dataset classes."""

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechft_upstream.data import corpus, layout_qbe, layout_sd  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    manifest = corpus.generate(out, seed=3, size="tiny", workers=2)
    return out, manifest


def _lines(path):
    return [line.split() for line in path.read_text().splitlines()]


def test_sd_layout(tiny):
    import soundfile
    from s3prl.downstream.diarization.dataset import DiarizationDataset

    out, manifest = tiny
    roles = manifest["roles"]
    for split, count in zip(("train", "dev", "test"), layout_sd.MIXTURES["tiny"]):
        folder = out / "sd" / split
        segments = _lines(folder / "segments")
        utt2spk = dict(_lines(folder / "utt2spk"))
        recs = {rec for _, rec, _, _ in segments}
        assert len(recs) == count and len(segments) == 3 * count
        # two speakers per mixture, both from this split's speakers; A's turns never overlap each other
        for rec in recs:
            turns = sorted((float(st), float(et), utt2spk[utt]) for utt, r, st, et in segments if r == rec)
            assert len({spk for *_, spk in turns}) == 2 and turns[0][2] == turns[2][2]
            assert {int(spk[3:]) for *_, spk in turns} <= set(roles[split])
            assert turns[1][0] < turns[0][1]  # B starts inside A's first turn: overlapped speech
            assert turns[2][0] > turns[0][1]
        durations = {rec: float(d) for rec, d in _lines(folder / "reco2dur")}
        for rec, path in _lines(folder / "wav.scp"):
            audio, rate = soundfile.read(path)
            assert rate == 16000 and audio.size / rate == pytest.approx(durations[rec], abs=1e-3)
        rttm = _lines(folder / "rttm")
        assert sorted((r[1], float(r[3]), r[7]) for r in rttm) == sorted(
            (rec, float(st), utt2spk[utt]) for utt, rec, st, _ in segments)

        data = DiarizationDataset(split, str(folder), chunk_size=2000, frame_shift=320, num_speakers=2)
        if split == "test":
            chunks, labels, rec = data[0]
            assert rec in recs and labels[0].shape[1] == 2
            label = labels[0]
        else:
            assert len(data) == count  # one chunk per (short) mixture
            wav, label = data[0]
            assert wav.ndim == 1 and label.shape == (wav.size // 320 + (wav.size % 320 > 0), 2)
        assert (label.sum(1) == 2).any() and (label.sum(1) == 1).any() and label.sum(0).min() > 0


def test_qbe_layout(tiny):
    from s3prl.downstream.quesst14_dtw.dataset import QUESST14Dataset

    from speechft_upstream.evaluate import mtwv

    out, manifest = tiny
    n_dev, n_eval, n_docs = layout_qbe.SIZES["tiny"]
    words = {u["path"].rsplit("/", 1)[1][:-4]: u["text"] for u in manifest["utterances"] if u["task"] == "qbe"}
    for split, n in (("dev", n_dev), ("eval", n_eval)):
        data = QUESST14Dataset(split, dataset_root=str(out / "qbe"))
        assert (data.n_queries, data.n_docs) == (n, n_docs)
        wav, name = data[0]
        assert name == f"qbe_{split}_0001" and wav.ndim == 1 and np.abs(wav).max() > 0.01
        assert data[len(data) - 1][1] == f"qbe_doc_{n_docs:04d}"
        truth, documents, queries = mtwv.read_groundtruth(out / "qbe" / "scoring" / f"groundtruth_quesst14_{split}")
        assert len(documents) == n_docs and queries == [f"qbe_{split}_{i + 1:04d}" for i in range(n)]
        # the ground truth is exactly "the query's word is in the document's text"
        assert truth == {(q, d) for q in queries for d in documents if words[q] in words[d].split()}
        assert {q for q, _ in truth} == set(queries)  # every query occurs somewhere


def test_existing_tasks_unchanged_by_sd_qbe():
    """SD/QbE jobs come after the others and in shards of their own: the other plans are untouched."""
    layout = corpus.plan(seed=3, size="tiny")
    assert {j["task"] for j in layout["jobs"]} == {"asr", "sid", "ks", "ic", "er", "sf"}
    sd = layout_sd.plan_jobs(3, "tiny", layout["roles"])
    qbe = layout_qbe.plan_jobs(3, "tiny", layout["roles"])
    assert {j["id"] for j in sd + qbe}.isdisjoint(j["id"] for j in layout["jobs"])
