"""`speechft corpus --language L`: a second-language corpus for unsupervised fine-tuning.

The Speech-FT paper also adapts θ0 to a new language by continued pre-training (it uses
Mandarin), merges, and evaluates on the English tasks and on phoneme recognition (PR) in the new
language. This writes, for one eSpeak NG language other than English (``LANGUAGES``: Mandarin
``cmn``, whose full dictionary ``cmn_dict`` the pinned espeakng-loader wheel bundles):

- ``unlabelled/spkNNN/<id>.wav``: the unlabelled audio (``speechft unsupervised --audio``);
- ``pr/``: PR in the layout of the English corpus's ``pr/`` (``{train,dev,test}.csv`` with
  wav_path relative to pr/, phonemes, transcription, speaker; ``phones.txt``, the phone
  inventory pr.sh gives s3prl as its vocabulary), audio under ``pr/wav/<split>/``;
- ``corpus.json``: every utterance (text, phonemes, speaker, split, path), the speakers, seed,
  size, eSpeak NG version.

Phones are eSpeak NG's own phoneme names for the language. In Mandarin eSpeak NG's tones are
phonemes of their own (``55``, ``35``, ``214``, ``51``, ``11`` for the neutral tone) that it
prints fused to the vowel (``A214``); they become separate tokens (``A 214``), and eSpeak's
syllable marks ``|`` are dropped, so the inventory is some 50 phones rather than one per
vowel × tone.

Speakers are eSpeak NG voice variants with their own pitch, range, rate, vocal-tract warp,
channel tilt and noise (the English corpus's recipe, render.py), drawn from a stream of their
own. The first ``train`` speakers say the unlabelled audio and PR's train split (different
sentences); PR dev and test speakers are unseen in both. Deterministic for a seed: a fixed
number of shards, each synthesised in a fresh process (as corpus.py does).
"""

import json
import re
import shutil
import time
from pathlib import Path

from speechft_upstream.checkpoints import atomic
from speechft_upstream.data import lang_cmn
from speechft_upstream.data.plan import SAMPLE_RATE, make_speakers, rng_for
from speechft_upstream.errors import SpeechFTError

FORMAT_VERSION = 1  # the second-language corpora's own; the English corpus's is plan.FORMAT_VERSION
LANGUAGES = {"cmn": {"name": "Mandarin Chinese", "voice": "cmn", "dictionary": "cmn_dict", "sentence": lang_cmn.sentence}}
# speakers (train = unlabelled + PR train; dev, test: PR only) and utterances per speaker
SIZES = {
    "default": {"train": 32, "heldout": 8, "unlabelled": 40, "pr_train": 10, "pr_heldout": 15, "shards": 4},
    "quick": {"train": 16, "heldout": 4, "unlabelled": 20, "pr_train": 6, "pr_heldout": 10, "shards": 2},
    "tiny": {"train": 3, "heldout": 2, "unlabelled": 2, "pr_train": 2, "pr_heldout": 2, "shards": 1},
}
_TONE = re.compile(r"^(.*?)(\d+)$")


def check_language(language):
    if language not in LANGUAGES:
        english = " (English is the corpus without --language)" if str(language).lower().startswith("en") else ""
        available = ", ".join(sorted(LANGUAGES))
        raise SpeechFTError(f"--language {language}: no second-language corpus for it{english}; available: {available}")
    import espeakng_loader

    info = LANGUAGES[language]
    dictionary = Path(espeakng_loader.get_data_path()) / info["dictionary"]
    if not dictionary.is_file():
        name = info["name"]
        raise SpeechFTError(f"{dictionary}: eSpeak NG's {name} dictionary is missing from espeakng-loader "
                            "(pip install espeakng-loader==0.2.4)")
    return info


def phone_tokens(words, text=""):
    """eSpeak's per-word phonemes → PR tokens: tones split from their vowel, syllable marks dropped."""
    tokens = []
    for word in words:
        for phone in word:
            if phone == "|":
                continue
            if phone.startswith("("):  # eSpeak switched language: a word the vocabulary should not have
                raise SpeechFTError(f"internal error: eSpeak NG read part of {text!r} as another language ({phone})")
            tone = _TONE.match(phone)
            tokens += [t for t in tone.groups() if t] if tone else [phone]
    return tokens


def plan(language, seed=0, size="default"):
    """Speakers and utterance jobs (no audio), a pure function of language, seed and size."""
    info, sizes = LANGUAGES[language], SIZES[size]
    n_train, n_heldout = sizes["train"], sizes["heldout"]
    speakers = make_speakers((language, seed), n_train + 2 * n_heldout)
    for s in speakers:
        s["accent"] = info["voice"]  # voice variant, pitch, rate, warp, tilt and noise as drawn
    roles = {"train": list(range(n_train)), "dev": list(range(n_train, n_train + n_heldout)),
             "test": list(range(n_train + n_heldout, n_train + 2 * n_heldout))}
    jobs = []
    for split, members in roles.items():
        for s in members:
            rng = rng_for((language, seed), "text", s)
            kinds = [("pr", sizes["pr_train" if split == "train" else "pr_heldout"])]
            if split == "train":
                kinds.insert(0, ("unlabelled", sizes["unlabelled"]))
            for task, count in kinds:
                for n in range(count):
                    job = {"id": f"{language}-{task}-{len(jobs):06d}", "task": task, "split": split, "speaker": s,
                           "text": info["sentence"](rng)}
                    folder = f"unlabelled/spk{s:03d}" if task == "unlabelled" else f"pr/wav/{split}/spk{s:03d}"
                    job["path"] = f"{folder}/{job['id']}.wav"
                    jobs.append(job)
    for index, job in enumerate(jobs):
        job["noise_seed"] = int(rng_for((language, seed), "noise", index).integers(2 ** 31))
    return {"language": language, "seed": seed, "size": size, "speakers": speakers, "roles": roles, "jobs": jobs}


def generate(out, language, seed=0, size="default", workers=None, force=False, progress=None):
    """Write the corpus of ``language`` into ``out``; returns the manifest (reused when already there)."""
    from speechft_upstream.data.corpus import _replace

    say = progress or (lambda message: None)
    check_language(language)
    out = Path(out)
    manifest_path = out / "corpus.json"
    if out.exists() and any(out.iterdir()) and not force:
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = None
        if manifest is None:
            raise SpeechFTError(f"{manifest_path}: not found, so {out} (not empty) is not a speechft corpus; "
                                "choose an empty or new folder, or use --force to replace it")
        if {k: manifest.get(k) for k in ("language", "seed", "size", "format")} == \
                {"language": language, "seed": seed, "size": size, "format": FORMAT_VERSION}:
            say(f"{out}: {language} corpus already there (seed {seed}, {size}); reusing it")
            return manifest
        raise SpeechFTError(f"{out}: exists and is not this corpus ({language}, seed {seed}, {size}); "
                            "use --force to replace it")
    started = time.time()
    layout = plan(language, seed, size)
    tmp = atomic.new_temp(out, folder=True)  # swapped in when complete, as corpus.py does
    try:
        manifest = _write(tmp, layout, workers, say)
        _replace(tmp, out)
    except Exception as err:
        failed = atomic.failure_of(err, tmp)
        if failed is None:
            raise
        raise atomic.write_error(out, failed, atomic.size_of(tmp)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"wrote {len(manifest['utterances'])} {language} utterances ({manifest['minutes']:.1f} min of audio) "
        f"to {out} in {time.time() - started:.0f} s")
    return manifest


def _write(tmp, layout, workers, say):
    import multiprocessing
    import os

    from speechft_upstream.data.render import shard_worker

    jobs, speakers = layout["jobs"], layout["speakers"]
    n = SIZES[layout["size"]]["shards"]
    shards = [jobs[i::n] for i in range(n)]
    workers = min(workers or min(2, os.cpu_count() or 1), n)
    say(f"synthesising {len(jobs)} {layout['language']} utterances of {len(speakers)} speakers with eSpeak NG "
        f"({workers} process{'es' if workers > 1 else ''})")
    results, version = {}, None
    context = multiprocessing.get_context("spawn")  # fresh eSpeak NG state for every shard
    with context.Pool(workers, maxtasksperchild=1) as pool:
        for done, (shard_results, version) in enumerate(
                pool.imap(shard_worker, [(shard, speakers, str(tmp)) for shard in shards]), 1):
            for r in shard_results:
                results[r["id"]] = r
            say(f"shard {done}/{len(shards)}")
    for job in jobs:
        r = results[job["id"]]
        job.update(samples=r["samples"], snr_db=r["snr_db"], phonemes=phone_tokens(r["phonemes"], job["text"]))
        if not job["phonemes"]:
            text = job["text"]
            raise SpeechFTError(f"internal error: eSpeak NG gave no phonemes for {text!r}")
    _write_pr(tmp, jobs)
    minutes = sum(j["samples"] for j in jobs) / SAMPLE_RATE / 60
    counts = {}
    for j in jobs:
        key = "unlabelled" if j["task"] == "unlabelled" else f"pr_{j['split']}"
        counts[key] = counts.get(key, 0) + 1
    manifest = {"format": FORMAT_VERSION, "language": layout["language"], "name": LANGUAGES[layout["language"]]["name"],
                "seed": layout["seed"], "size": layout["size"], "espeak_ng": version, "sample_rate": SAMPLE_RATE,
                "minutes": round(minutes, 2), "counts": counts,
                "unlabelled_minutes": round(sum(j["samples"] for j in jobs if j["task"] == "unlabelled")
                                            / SAMPLE_RATE / 60, 2),
                "speakers": speakers, "roles": layout["roles"],
                "utterances": [{k: j[k] for k in ("id", "task", "split", "speaker", "text", "phonemes", "path", "samples",
                                                  "snr_db")} for j in jobs]}
    (tmp / "corpus.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def _write_pr(out, jobs):
    import csv
    import os

    phones = set()
    (out / "pr").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        with open(out / "pr" / f"{split}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["wav_path", "phonemes", "transcription", "speaker"])
            for j in jobs:
                if j["task"] == "pr" and j["split"] == split:
                    phones.update(j["phonemes"])
                    writer.writerow([os.path.relpath(j["path"], "pr"), " ".join(j["phonemes"]), j["text"], j["speaker"]])
    (out / "pr" / "phones.txt").write_text("".join(f"{p}\n" for p in sorted(phones)))
