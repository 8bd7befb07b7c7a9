"""DER (pyannote.metrics, SUPERB settings) on hand-written RTTMs; MTWV on hand-computed cases."""

import math

import pytest

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate import der, mtwv

REFERENCE = """\
SPEAKER rec1 1 0.00 10.00 <NA> <NA> A <NA> <NA>
SPEAKER rec1 1 5.00 10.00 <NA> <NA> B <NA> <NA>
SPEAKER rec2 1 0.00 4.00 <NA> <NA> C <NA> <NA>
SPEAKER rec3 1 0.00 2.00 <NA> <NA> A <NA> <NA>
SPEAKER rec3 1 2.00 2.00 <NA> <NA> B <NA> <NA>
"""
HYPOTHESIS = """\
SPEAKER rec1 1    0.00    8.00 <NA> <NA> rec1_0 <NA>
SPEAKER rec1 1    8.00    7.00 <NA> <NA> rec1_1 <NA>
SPEAKER rec2 1    1.00    5.00 <NA> <NA> rec2_0 <NA>
SPEAKER rec3 1    0.00    4.00 <NA> <NA> rec3_0 <NA>
"""


def test_der_by_hand_and_against_pyannote(tmp_path):
    (tmp_path / "ref.rttm").write_text(REFERENCE)
    (tmp_path / "hyp.rttm").write_text(HYPOTHESIS)
    out = der.der_files(tmp_path / "ref.rttm", tmp_path / "hyp.rttm")
    # rec1: overlap 5-10 has one hypothesis speaker: 5 s missed of 20 s of reference speech.
    # rec2: 0-1 missed, 4-6 false alarm (scored region = extent of both), 4 s of speech.
    # rec3: one speaker for two: 2 s confusion of 4 s. Total (5 + 1 + 2 + 2) / 28.
    assert out["reference_seconds"] == pytest.approx(28.0)
    assert out["missed"] == pytest.approx(6 / 28)
    assert out["false_alarm"] == pytest.approx(2 / 28)
    assert out["confusion"] == pytest.approx(2 / 28)
    assert out["der"] == pytest.approx(10 / 28)

    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    for rec, ref, hyp in (("rec1", [(0, 10, "A"), (5, 15, "B")], [(0, 8, "x"), (8, 15, "y")]),
                          ("rec2", [(0, 4, "C")], [(1, 6, "z")]),
                          ("rec3", [(0, 2, "A"), (2, 4, "B")], [(0, 4, "x")])):
        r, h = Annotation(uri=rec), Annotation(uri=rec)
        for s, e, who in ref:
            r[Segment(s, e)] = who
        for s, e, who in hyp:
            h[Segment(s, e)] = who
        metric(r, h)
    assert out["der"] == pytest.approx(abs(metric))


def test_der_missing_recording_and_bad_rttm(tmp_path):
    (tmp_path / "ref.rttm").write_text(REFERENCE)
    (tmp_path / "hyp.rttm").write_text(HYPOTHESIS.splitlines()[0] + "\n")  # rec2, rec3 not hypothesised
    out = der.der_files(tmp_path / "ref.rttm", tmp_path / "hyp.rttm")
    # rec1 as above (5 missed); rec2 4 s and rec3 4 s all missed; rec1_1's 8-15 gone: 8-10 B and 10-15 B missed
    assert out["der"] == pytest.approx((5 + 2 + 5 + 4 + 4) / 28)
    (tmp_path / "bad.rttm").write_text("SPEAKER rec1 1 zero 1.0 <NA> <NA> A <NA>\n")
    with pytest.raises(SpeechFTError, match="bad.rttm:1: start and duration must be numbers"):
        der.read_rttm(tmp_path / "bad.rttm")
    (tmp_path / "other.rttm").write_text("SPEAKER rec9 1 0 1.0 <NA> <NA> A <NA>\n")
    with pytest.raises(SpeechFTError, match="rec9"):
        der.der_files(tmp_path / "ref.rttm", tmp_path / "other.rttm")


# Two queries, four documents; q1 occurs in d1, q2 in d2 and d3.
SCORES = {("q1", "d1"): 0.9, ("q1", "d2"): 0.8, ("q1", "d3"): 0.1, ("q1", "d4"): 0.2,
          ("q2", "d1"): 0.3, ("q2", "d2"): 0.7, ("q2", "d3"): 0.6, ("q2", "d4"): 0.85}
TRUTH = {("q1", "d1"), ("q2", "d2"), ("q2", "d3")}
DOCS = ["d1", "d2", "d3", "d4"]


def test_mtwv_by_hand_beta_one():
    # P_target 0.5, C_miss = C_FA = 1: beta = (1/1)(1/0.5 - 1) = 1. q1: N_true 1, N_false 3; q2: N_true 2, N_false 2.
    # theta  detected                     q1 Pmiss+PFA    q2 Pmiss+PFA   TWV = 1 - mean
    # 0.9    q1d1                         0               1              0.5
    # 0.85   + q2d4 (FA)                  0               1 + 1/2        0.25
    # 0.8    + q1d2 (FA)                  1/3             1.5            1/12
    # 0.7    + q2d2                       1/3             1/2 + 1/2      1/3
    # 0.6    + q2d3                       1/3             0 + 1/2        7/12   <- max
    # 0.3    + q2d1 (FA)                  1/3             1              1/3
    # 0.2    + q1d4 (FA)                  2/3             1              1/6
    # 0.1    + q1d3 (FA)                  1               1              0
    thresholds, twv = mtwv.twv_curve(SCORES, TRUTH, DOCS, p_target=0.5, c_miss=1.0)
    assert list(thresholds) == [0.9, 0.85, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, math.inf]
    assert twv == pytest.approx([0.5, 0.25, 1 / 12, 1 / 3, 7 / 12, 1 / 3, 1 / 6, 0.0, 0.0])
    out = mtwv.mtwv(SCORES, TRUTH, DOCS, p_target=0.5, c_miss=1.0)
    assert out["mtwv"] == pytest.approx(7 / 12) and out["threshold"] == 0.6
    assert out["queries"] == 2 and out["trials"] == 8
    # ATWV of the decisions {q1d1, q2d4}: q1 0, q2 1 + 1/2 -> 1 - 1.5 / 2
    assert mtwv.atwv({("q1", "d1"), ("q2", "d4")}, TRUTH, DOCS, p_target=0.5, c_miss=1.0) == pytest.approx(0.25)


def test_mtwv_by_hand_quesst_constants():
    # QUESST's scorer: P_target 0.0008, C_miss 100, C_FA 1 (mtwv.py's docstring). By hand:
    # beta = (C_FA / C_miss) (1 / P_target - 1) = (1 / 100) (1250 - 1) = 12.49, and the one number
    # score-TWV-Cnxe.sh passes its jar: 100 * 0.0008 / (100 * 0.0008 + 1 * 0.9992) = 0.08 / 1.0792
    # = 0.074128984..., which bc (scale 7) writes as 0.0741289, the value in its README's example.
    assert mtwv.beta() == pytest.approx(12.49)
    assert mtwv.effective_prior() == pytest.approx(0.08 / 1.0792)
    assert math.floor(mtwv.effective_prior() * 1e7) / 1e7 == 0.0741289
    assert (1 - mtwv.effective_prior()) / mtwv.effective_prior() == pytest.approx(mtwv.beta())
    # SCORES, beta 12.49: a q1 false alarm costs 12.49 / 3 = 4.1633, a q2 one 12.49 / 2 = 6.245;
    # a q1 hit gains 1, a q2 hit 1/2; TWV = (gains - costs) / 2 queries:
    # theta 0.9  q1d1            (1) / 2                          = 0.5      <- max
    #       0.85 + q2d4 (FA)     (1 - 6.245) / 2                  = -2.6225
    #       0.8  + q1d2 (FA)     (1 - 6.245 - 4.16333) / 2        = -4.70417
    #       0.6  all hits, 2 FA  (1 + 1 - 6.245 - 4.16333) / 2    = -4.20417
    #       0.1  everything      1 - (0 + 12.49 + 0 + 12.49) / 2  = -11.49
    thresholds, twv = mtwv.twv_curve(SCORES, TRUTH, DOCS)
    assert twv[[0, 1, 2, 4, 7]] == pytest.approx([0.5, -2.6225, -4.7041667, -4.2041667, -11.49])
    out = mtwv.mtwv(SCORES, TRUTH, DOCS)
    assert out["mtwv"] == pytest.approx(0.5) and out["threshold"] == 0.9
    # where the constants decide: one query, 20 documents, its one hit (e0) ranked below one false
    # alarm (e1). Detecting both: P_miss 0, P_FA 1/19 -> TWV = 1 - 12.49 / 19 = 6.51 / 19 = 0.342632.
    # With C_miss 1 (beta 1249): 1 - 1249 / 19 < 0, so MTWV 0 (nothing detected).
    docs = [f"e{i}" for i in range(20)]
    scores = {("qa", d): 0.1 for d in docs} | {("qa", "e1"): 0.9, ("qa", "e0"): 0.8}
    out = mtwv.mtwv(scores, {("qa", "e0")}, docs)
    assert out["mtwv"] == pytest.approx(6.51 / 19) and out["threshold"] == 0.8
    old = mtwv.mtwv(scores, {("qa", "e0")}, docs, c_miss=1.0)
    assert old["mtwv"] == 0.0 and old["threshold"] == math.inf
    # a query with no hit is not scored (q3's high scores change nothing)
    scores = {**SCORES, **{("q3", d): 5.0 for d in DOCS}}
    assert mtwv.mtwv(scores, TRUTH, DOCS)["mtwv"] == pytest.approx(0.5)
    # ties: q1d1 and q2d4 both 0.9 -> detecting one detects both; beta 1: q2 cost 1 + 1/2
    tied = {**SCORES, ("q2", "d4"): 0.9}
    thresholds, twv = mtwv.twv_curve(tied, TRUTH, DOCS, p_target=0.5, c_miss=1.0)
    assert thresholds[0] == 0.9 and twv[0] == pytest.approx(1 - (0 + 1.5) / 2)
    # a missing trial gets the default score (-10): q2d3 missing -> found only at theta = -10
    missing = {k: v for k, v in SCORES.items() if k != ("q2", "d3")}
    thresholds, twv = mtwv.twv_curve(missing, TRUTH, DOCS, p_target=0.5, c_miss=1.0)
    assert thresholds[-2] == -10.0 and twv[-2] == pytest.approx(0.0)  # everything detected: q1 1, q2 0 + 1
    assert mtwv.mtwv(missing, TRUTH, DOCS, p_target=0.5, c_miss=1.0)["mtwv"] == pytest.approx(0.5)


def _write_groundtruth(folder, truth, docs, queries):
    folder.mkdir(parents=True)
    (folder / "x.ecf.xml").write_text(
        "<ecf>\n" + "".join(f'  <excerpt audio_filename="Audio/{d}.wav" channel="1" tbeg="0" dur="1"/>\n'
                            for d in docs) + "</ecf>\n")
    (folder / "x.tlist.xml").write_text(
        "<termlist>\n" + "".join(f'  <term termid="{q}"><termtext>{q}</termtext></term>\n' for q in queries)
        + "</termlist>\n")
    (folder / "x.rttm").write_text("".join(f"LEXEME {d} 1 0.50 0.40 {q} lex <NA> <NA>\n" for q, d in sorted(truth)))


def test_files_as_s3prl_writes_them(tmp_path):
    from lxml import etree

    root = etree.Element("stdlist", termlist_filename="benchmark.stdlist.xml", system_id="benchmark")
    for q in ("q1", "q2"):
        tl = etree.SubElement(root, "detected_termlist", termid=q)
        for d in DOCS:
            score = SCORES[(q, d)]
            etree.SubElement(tl, "term", file=d, channel="1", tbeg="0.000", dur="0.00", score=f"{score:.4f}",
                             decision="YES" if score > 0.84 else "NO")
    etree.ElementTree(root).write(str(tmp_path / "benchmark.stdlist.xml"), encoding="UTF-8", pretty_print=True)
    _write_groundtruth(tmp_path / "gt", TRUTH, DOCS, ["q1", "q2"])
    out = mtwv.score_files(tmp_path / "benchmark.stdlist.xml", tmp_path / "gt", p_target=0.5, c_miss=1.0)
    assert out["mtwv"] == pytest.approx(7 / 12)
    assert out["atwv"] == pytest.approx(0.25)
    with pytest.raises(SpeechFTError, match="expected one \\*.rttm"):
        (tmp_path / "gt" / "x.rttm").unlink()
        mtwv.read_groundtruth(tmp_path / "gt")
