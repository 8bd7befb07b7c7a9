"""Maximum term-weighted value (MTWV) of query-by-example detection scores (SUPERB QbE).

s3prl's ``quesst14_dtw`` writes one score per (query, document) pair to
``benchmark.stdlist.xml`` and leaves scoring to the QUESST package (``scoring/score-TWV-Cnxe.sh``
and its Java tool), which s3prl does not ship; SUPERB runs it with -10 as the default score
(s3prl's docs/superb.md, QbE: ``./score-TWV-Cnxe.sh EXP groundtruth_quesst14_eval -10``). This
module computes the same TWV measures from their definition.

Definition: the term-weighted value of the NIST 2006 Spoken Term Detection evaluation plan
(http://www.itl.nist.gov/iad/mig/tests/std/2006/, the format reference of the QUESST scoring
README), with a (query, document) pair as the trial: QUESST asks whether the query occurs
somewhere in the document, with no time stamps (X. Anguera, L. J. Rodriguez-Fuentes, I. Szöke,
A. Buzo, F. Metze, "Query by Example Search on Speech at Mediaeval 2014", MediaEval 2014
Workshop, CEUR-WS Vol-1263, paper 35, https://ceur-ws.org/Vol-1263/mediaeval2014_submission_35.pdf:
Cnxe is the primary metric, ATWV "kept as a secondary metric", abstract). For a threshold θ and
a query t with N_true(t) ≥ 1 relevant documents among N_docs:

    P_miss(t, θ) = 1 − N_correct(t, θ) / N_true(t)
    P_FA(t, θ)   = N_FA(t, θ) / (N_docs − N_true(t))
    TWV(θ)       = 1 − mean_t [ P_miss(t, θ) + β · P_FA(t, θ) ]
    β            = (C_FA / C_miss) · (1 / P_target − 1)

averaged over the queries with at least one relevant document (the others have no P_miss).
A trial is detected when its score is ≥ θ (one threshold for all queries). MTWV = max over θ
of TWV(θ); θ = +∞ (nothing detected) gives 0, so MTWV ≥ 0. ATWV is TWV of the system's own
YES/NO decisions.

Constants (``P_TARGET``, ``C_MISS``, ``C_FA``): P_target = 0.0008, C_miss = 100, C_FA = 1, hence
β = (1/100) · (1/0.0008 − 1) = 1249 / 100 = 12.49. Checked against the QUESST scoring package
as released for QUESST 2015 (the same ``score-TWV-Cnxe.sh <STDLIST_dir> <Ground_Truth_dir>
[<default_score>]`` interface): the script sets ``P_target=0.0008``, ``C_fa=1``,
``C_miss=100`` and hands its Java tool one number, the effective prior
C_miss·P_target / (C_miss·P_target + C_fa·(1 − P_target)) = 0.08 / 1.0792 = 0.07412898...,
written by ``bc`` with scale 7 as 0.0741289; its ``scoring/README`` scores the example system
(from an SWS 2013 submission, SWS 2013 ground truth) with that same 0.0741289. Given only that
prior, the tool's TWV weight is β = (1 − P_eff) / P_eff = C_fa·(1 − P_target) / (C_miss·P_target)
(inferred: the jar's source was not read), 12.49 for the exact P_eff and 12.490015 for the
truncated 0.0741289, a TWV difference of at most 1.6e-5 times the mean P_FA.
What was not verified: the QUESST 2014 release of the script (quesst14Database, with
MediaEvalQUESST2014.jar, the one SUPERB runs) could not be read here; the 2015 README's use of
the same number for a 2013 system suggests the constants did not change from SWS 2013 to
QUESST 2015, but that is an inference. Nor could the QUESST 2014 paper's metric section or the
NIST plan be read (NIST STD 2006 itself weighs false alarms by β = 999.9: C/V = 0.1,
P_term = 1e-4, from memory, not checked here). This module used C_miss = 1 (β = 1249) before,
which does not match the scoring package: a false alarm cost 100 times what the scorer charges.

The constants are keyword arguments, so another setting is one call away. Trials missing from
the system output get ``default_score`` (-10, as SUPERB passes it).
"""

import sys
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

P_TARGET = 0.0008
C_MISS = 100.0
C_FA = 1.0
DEFAULT_SCORE = -10.0


def beta(p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    return (c_fa / c_miss) * (1.0 / p_target - 1.0)


def effective_prior(p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    """The one number score-TWV-Cnxe.sh hands the scoring tool (for Cnxe and TWV alike)."""
    return c_miss * p_target / (c_miss * p_target + c_fa * (1.0 - p_target))


def _check(scores, truth, documents):
    queries = sorted({q for q, _ in truth})
    if not queries:
        raise SpeechFTError("the ground truth has no (query, document) hit: TWV is undefined")
    docs = set(documents)
    unknown = sorted({d for _, d in truth} - docs)
    if unknown:
        raise SpeechFTError(f"ground-truth documents not in the document list: {', '.join(unknown[:5])}")
    return queries


def twv_curve(scores, truth, documents, default_score=DEFAULT_SCORE, p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    """(thresholds, TWV at each): every distinct trial score as θ (detect ≥ θ), then +∞.

    ``scores``: {(query, document): score}; ``truth``: set of (query, document) hits;
    ``documents``: every document of the collection. Only queries with a hit are scored.
    """
    import numpy as np

    queries = _check(scores, truth, documents)
    documents = sorted(set(documents))
    b = beta(p_target, c_miss, c_fa)
    n_docs = len(documents)
    values, is_hit, weight_hit, weight_fa = [], [], [], []
    for q in queries:
        n_true = sum((q, d) in truth for d in documents)
        n_false = n_docs - n_true
        for d in documents:
            hit = (q, d) in truth
            values.append(float(scores.get((q, d), default_score)))
            is_hit.append(hit)
            # one detected hit lowers P_miss(q) by 1/N_true; one false alarm raises P_FA(q) by 1/N_false
            weight_hit.append(1.0 / n_true if hit else 0.0)
            weight_fa.append(0.0 if hit or n_false == 0 else 1.0 / n_false)
    values = np.asarray(values)
    order = np.argsort(-values, kind="stable")
    values = values[order]
    gain = np.cumsum(np.asarray(weight_hit)[order] - b * np.asarray(weight_fa)[order])
    # detect everything with score >= θ: the gain up to the last trial with that score
    last = np.r_[np.nonzero(values[1:] != values[:-1])[0], values.size - 1]
    thresholds = np.r_[values[last], np.inf]
    twv = np.r_[gain[last], 0.0] / len(queries)  # TWV = 1 − mean(P_miss + β P_FA) = mean(gain)
    return thresholds, twv


def mtwv(scores, truth, documents, **kwargs):
    """{"mtwv", "threshold", "queries", "trials"}: the maximum of the TWV curve."""
    thresholds, twv = twv_curve(scores, truth, documents, **kwargs)
    best = int(twv.argmax())
    queries = len({q for q, _ in truth})
    return {"mtwv": float(twv[best]), "threshold": float(thresholds[best]), "queries": queries,
            "trials": queries * len(set(documents))}


def atwv(decisions, truth, documents, p_target=P_TARGET, c_miss=C_MISS, c_fa=C_FA):
    """TWV of YES decisions: ``decisions`` is the set of (query, document) pairs said YES."""
    scores = {pair: 1.0 for pair in decisions}
    thresholds, twv = twv_curve(scores, truth, documents, default_score=0.0, p_target=p_target,
                                c_miss=c_miss, c_fa=c_fa)
    return float(twv[thresholds == 1.0][0]) if (thresholds == 1.0).any() else 0.0


# ---- files: s3prl's stdlist output and a QUESST-style ground truth -----------------------------

def read_stdlist(path):
    """({(query, document): score}, {(query, document) said YES}) from a NIST STD stdlist XML."""
    from lxml import etree

    path = Path(path)
    if not path.is_file():
        raise SpeechFTError(f"{path}: detection list not found")
    try:
        root = etree.parse(str(path)).getroot()
    except etree.XMLSyntaxError as err:
        raise SpeechFTError(f"{path}: not valid XML ({err})") from None
    scores, yes = {}, set()
    for termlist in root.iter("detected_termlist"):
        query = termlist.get("termid")
        for term in termlist.iter("term"):
            pair = (query, Path(term.get("file", "")).stem)
            try:
                scores[pair] = float(term.get("score"))
            except (TypeError, ValueError):
                raise SpeechFTError(f"{path}: query {query}: score {term.get('score')!r} is not a number") from None
            if term.get("decision", "").upper() == "YES":
                yes.add(pair)
    return scores, yes


def read_groundtruth(folder):
    """(truth pairs, documents, queries) from a QUESST 2014-style ground-truth folder.

    Reads ``*.ecf.xml`` (``<excerpt audio_filename=...>``: the documents), ``*.tlist.xml``
    (``<term termid=...>``, optional ``<termtext>``: the queries) and ``*.rttm`` (``LEXEME <doc>
    <chan> <start> <dur> <term> ...`` lines: one per occurrence; the term field is the termid
    or the term's termtext).
    """
    from lxml import etree

    folder = Path(folder)

    def one(pattern):
        found = sorted(folder.glob(pattern))
        if len(found) != 1:
            raise SpeechFTError(f"{folder}: expected one {pattern} file (QUESST ground-truth layout: ecf.xml, "
                                f"tlist.xml, rttm), found {len(found)}")
        return found[0]

    ecf, tlist, rttm = one("*.ecf.xml"), one("*.tlist.xml"), one("*.rttm")
    try:
        documents = [Path(e.get("audio_filename")).stem for e in etree.parse(str(ecf)).getroot().iter("excerpt")]
        terms = etree.parse(str(tlist)).getroot().iter("term")
        by_text = {}
        queries = []
        for term in terms:
            termid = term.get("termid")
            queries.append(termid)
            text = term.findtext("termtext")
            by_text[(text or termid).strip()] = termid
            by_text[termid] = termid
    except etree.XMLSyntaxError as err:
        raise SpeechFTError(f"{folder}: not valid XML ({err})") from None
    truth = set()
    for number, line in enumerate(rttm.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "LEXEME":
            continue
        if len(fields) < 6 or fields[5] not in by_text:
            raise SpeechFTError(f"{rttm}:{number}: expected 'LEXEME <doc> <chan> <start> <dur> <termid> ...' "
                                f"with a term of {tlist.name}")
        truth.add((by_text[fields[5]], Path(fields[1]).stem))
    return truth, documents, queries


def score_files(stdlist, groundtruth, **kwargs):
    scores, yes = read_stdlist(stdlist)
    truth, documents, queries = read_groundtruth(groundtruth)
    known = set(queries)
    scores = {pair: s for pair, s in scores.items() if pair[0] in known}
    result = mtwv(scores, truth, documents, **kwargs)
    constants = {k: v for k, v in kwargs.items() if k in ("p_target", "c_miss", "c_fa")}
    result["atwv"] = atwv({p for p in yes if p[0] in known}, truth, documents, **constants)
    return result


def main(argv=None):
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m speechft_upstream.evaluate.mtwv",
                                     description="MTWV/ATWV of a stdlist XML against a QUESST-style ground truth")
    parser.add_argument("stdlist")
    parser.add_argument("groundtruth", help="folder with *.ecf.xml, *.tlist.xml, *.rttm")
    parser.add_argument("--default-score", type=float, default=DEFAULT_SCORE)
    args = parser.parse_args(argv)
    try:
        print(json.dumps(score_files(args.stdlist, args.groundtruth, default_score=args.default_score)))
    except SpeechFTError as err:
        print(f"speechft: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
