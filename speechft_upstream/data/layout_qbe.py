"""QbE: spoken queries and a search collection with ground truth, in the QUESST 2014 layout.

Queries are single words (nouns) spoken alone; documents are sentences by other speakers, each
built around one or two nouns, so a query occurs in some documents and not in others. Dev and
eval queries are different words searched in the same collection, as in QUESST 2014. The
ground truth is computed from the documents' text (a query occurs where its word does).

Under ``qbe/`` (the ``dataset_root`` of s3prl 0.4.18's ``quesst14_dtw``)::

    Audio/qbe_doc_NNNN.wav  dev_queries/qbe_dev_NNNN.wav  eval_queries/qbe_eval_NNNN.wav
    scoring/language_key_utterances.lst   "quesst14Database/Audio/qbe_doc_NNNN.wav nnenglish"
    scoring/language_key_dev.lst          the dev queries, likewise
    scoring/language_key_eval.lst         the eval queries
    scoring/groundtruth_quesst14_{dev,eval}/
        quesst14.ecf.xml                  <excerpt audio_filename="Audio/qbe_doc_NNNN.wav" .../>
        quesst14_{dev,eval}.tlist.xml     <term termid="qbe_dev_NNNN"><termtext>...</termtext></term>
        quesst14_{dev,eval}.rttm          LEXEME qbe_doc_NNNN 1 0.000 <doc dur> qbe_dev_NNNN lex <NA> <NA>

s3prl strips the first folder of each .lst path and reads the rest under dataset_root, and
keeps English (``nnenglish``) entries only. The RTTM's times span the whole document: QUESST
asks whether a query occurs in a document, not where.
"""

from pathlib import Path

from speechft_upstream.data.plan import _ADJ, _DET, _NOUN, _VERB, SAMPLE_RATE, rng_for

# (dev queries, eval queries, documents)
SIZES = {"default": (10, 10, 60), "quick": (6, 6, 36), "tiny": (2, 2, 8)}
LANG = "nnenglish"


def plan_jobs(seed, size, roles):
    """Query and document utterances (task "qbe"), with the words each document contains."""
    n_dev, n_eval, n_docs = SIZES[size]
    rng = rng_for(seed, "qbe")
    words = [str(w) for w in rng.permutation(_NOUN)[:n_dev + n_eval]]
    speakers = roles["dev"] + roles["test"]
    jobs = []

    def add(kind, index, text, speaker, path):
        n = len(jobs)
        jobs.append({"id": f"qbe-{n:06d}", "task": "qbe", "speaker": int(speaker), "split": kind, "text": text,
                     "qbe_name": Path(path).stem, "noise_seed": int(rng_for(seed, "qbe-noise", n).integers(2 ** 31)),
                     "path": f"qbe/{path}"})

    for i, word in enumerate(words[:n_dev]):
        add("dev", i, word, rng.choice(speakers), f"dev_queries/qbe_dev_{i + 1:04d}.wav")
    for i, word in enumerate(words[n_dev:]):
        add("eval", i, word, rng.choice(speakers), f"eval_queries/qbe_eval_{i + 1:04d}.wav")
    fillers = [str(w) for w in _NOUN if w not in words]
    for i in range(n_docs):
        # a query word in about two of three documents, the rest fillers only
        first = words[i % len(words)] if i % 3 != 2 else str(rng.choice(fillers))
        second = str(rng.choice(fillers + words))
        text = f"{rng.choice(_DET)} {rng.choice(_ADJ)} {first} {rng.choice(_VERB)} {rng.choice(_DET)} {second}"
        add("doc", i, text, rng.choice(roles["train"]), f"Audio/qbe_doc_{i + 1:04d}.wav")
    return jobs


def write(out, jobs):
    out = Path(out) / "qbe"
    scoring = out / "scoring"
    scoring.mkdir(parents=True, exist_ok=True)
    docs = [j for j in jobs if j["split"] == "doc"]
    for name, kind in (("language_key_utterances.lst", "doc"), ("language_key_dev.lst", "dev"),
                       ("language_key_eval.lst", "eval")):
        lines = [f"quesst14Database/{j['path'].split('qbe/', 1)[1]} {LANG}" for j in jobs if j["split"] == kind]
        (scoring / name).write_text("\n".join(lines) + "\n")
    ecf = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<ecf source_signal_duration="{sum(j["samples"] for j in docs) / SAMPLE_RATE:.3f}" language="english" '
           'version="speechft corpus">']
    ecf += [f'  <excerpt audio_filename="{j["path"].split("qbe/", 1)[1]}" channel="1" tbeg="0.000" '
            f'dur="{j["samples"] / SAMPLE_RATE:.3f}" source_type="splitcts"/>' for j in docs]
    ecf.append("</ecf>")
    for kind in ("dev", "eval"):
        folder = scoring / f"groundtruth_quesst14_{kind}"
        folder.mkdir(exist_ok=True)
        (folder / "quesst14.ecf.xml").write_text("\n".join(ecf) + "\n")
        queries = [j for j in jobs if j["split"] == kind]
        tlist = ['<?xml version="1.0" encoding="UTF-8"?>',
                 f'<termlist ecf_filename="quesst14.ecf.xml" language="english" version="speechft corpus">']
        tlist += [f'  <term termid="{q["qbe_name"]}"><termtext>{q["qbe_name"]}</termtext></term>' for q in queries]
        tlist.append("</termlist>")
        (folder / f"quesst14_{kind}.tlist.xml").write_text("\n".join(tlist) + "\n")
        rttm = [f"LEXEME {d['qbe_name']} 1 0.000 {d['samples'] / SAMPLE_RATE:.3f} {q['qbe_name']} lex <NA> <NA>"
                for q in queries for d in docs if q["text"] in d["text"].split()]
        (folder / f"quesst14_{kind}.rttm").write_text("".join(line + "\n" for line in rttm))
