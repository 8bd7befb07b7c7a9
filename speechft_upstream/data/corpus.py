"""`speechft corpus`: an offline speech corpus synthesised with eSpeak NG, in SUPERB layouts.

Speakers are eSpeak NG voices: an English accent (8 language voices) × a voice variant (which
sets formants and pitch envelope) × pitch, pitch range and speaking rate, plus a per-speaker
vocal-tract warp (the audio is resampled so that every frequency, formants included, moves by
the same factor) and a per-speaker channel tilt. Every utterance gets noise at a random SNR.

Speakers 0 … 59 are the training pool (and the 60 SID speakers); then ``k`` dev and ``k`` test
speakers (``k`` = 10, or 6 with ``--quick``), unseen in training for every task but SID, whose
train/dev/test utterances all come from the same 60 speakers.

Layout under OUT (each the on-disk format of the matching s3prl 0.4.18 downstream):

- ``asr/``: LibriSpeech-style ``LibriSpeech/{train,dev,test}/<spk>/<chapter>/`` with
  ``<spk>-<chapter>.trans.txt``, ``bucket/{train,dev,test}.csv`` (file_path, length) and
  ``char.dict`` (``-d asr``: libri_root = asr/LibriSpeech, bucket_file = asr/bucket).
- ``pr/``: ``{train,dev,test}.csv`` (wav_path relative to pr/, phonemes) over the ASR audio and
  ``phones.txt`` (``-d ctc`` with the libriphone corpus). Phones are eSpeak NG's ASCII phoneme
  names for the speaker's accent, stress and length marks removed.
- ``sid/``: VoxCeleb1-style ``all/wav/id1xxxx/<video>/<n>.wav`` and ``iden_split.txt``
  (``-d voxceleb1``: file_path = sid, meta_data = sid/iden_split.txt).
- ``ks/``: Speech Commands v1-style ``train/<word>/<speaker>_nohash_<n>.wav`` (+ other words,
  read as ``_unknown_``, and ``_background_noise_/``) and ``test/<class>/`` with all 12 classes,
  1 s clips (``-d speech_commands``). Dev speakers are named so that s3prl's hash split puts
  them in its validation list.
- ``ic/``: Fluent Speech Commands-style ``data/{train,valid,test}_data.csv`` (path, speakerId,
  transcription, action, object, location) and ``wavs/`` (``-d fluent_commands``).
- ``er/``: prosody classification (neutral, question, excited, calm; the same sentences in
  every class) as IEMOCAP-style ``meta_data/Session1/{train,test}_meta_data.json`` and ``wav/``
  (``-d emotion``, test_fold fold1).
- ``corpus.json``: every utterance with text, phonemes, speaker, task, split, label and path;
  the speakers' parameters; seed and eSpeak NG version.

Deterministic for a seed: jobs are cut into a fixed number of shards, each synthesised in a
fresh process in a fixed order (eSpeak NG carries state from one utterance to the next).
"""

import csv
import hashlib
import json
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

SAMPLE_RATE = 16000
N_SID_SPEAKERS = 60
SHARDS = 16
# Speakers and utterances per speaker. "tiny" exists for the tests only (too few SID speakers).
SIZES = {
    "default": {"train_speakers": N_SID_SPEAKERS, "heldout": 10, "sentences": 6, "sid": (6, 2, 2), "ks_reps": 2,
                "ks_unknown": 4, "ic": 6, "er": 3, "shards": SHARDS},
    "quick": {"train_speakers": N_SID_SPEAKERS, "heldout": 6, "sentences": 3, "sid": (4, 1, 1), "ks_reps": 1,
              "ks_unknown": 2, "ic": 3, "er": 2, "shards": SHARDS},
    "tiny": {"train_speakers": 6, "heldout": 2, "sentences": 2, "sid": (1, 1, 1), "ks_reps": 0, "ks_unknown": 1,
             "ic": 2, "er": 1, "shards": 2},
}
FORMAT_VERSION = 1

ACCENTS = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN_WORDS = ("bed", "bird", "cat", "dog", "happy", "house", "tree", "wow", "marvin", "sheila")
PROSODY = ("neutral", "question", "excited", "calm")

# IC: Fluent Speech Commands-like intents (action, object, location) and their phrasings.
INTENTS = (
    ("activate", "lights", "kitchen"), ("activate", "lights", "bedroom"), ("activate", "lights", "washroom"),
    ("activate", "lights", "none"), ("deactivate", "lights", "kitchen"), ("deactivate", "lights", "bedroom"),
    ("deactivate", "lights", "washroom"), ("deactivate", "lights", "none"), ("activate", "music", "none"),
    ("deactivate", "music", "none"), ("increase", "volume", "none"), ("decrease", "volume", "none"),
    ("increase", "heat", "kitchen"), ("increase", "heat", "bedroom"), ("increase", "heat", "none"),
    ("decrease", "heat", "kitchen"), ("decrease", "heat", "bedroom"), ("decrease", "heat", "none"),
    ("bring", "newspaper", "none"), ("bring", "shoes", "none"), ("bring", "juice", "none"),
    ("change language", "Chinese", "none"), ("change language", "Korean", "none"), ("change language", "English", "none"),
)
_ACTION_PHRASES = {
    "activate": ("turn on the {o}{l}", "switch on the {o}{l}", "{o} on{l}"),
    "deactivate": ("turn off the {o}{l}", "switch off the {o}{l}", "{o} off{l}"),
    "increase": ("turn up the {o}{l}", "increase the {o}{l}", "more {o}{l}"),
    "decrease": ("turn down the {o}{l}", "decrease the {o}{l}", "less {o}{l}"),
    "bring": ("bring me the {o}", "fetch my {o}", "get me the {o}"),
    "change language": ("switch the language to {o}", "change language to {o}", "use {o}"),
}

# PR/ASR/SID/ER sentences: a small grammar over a fixed vocabulary.
_DET = ("the", "a", "every", "that", "my", "our")
_ADJ = ("quiet", "bright", "heavy", "little", "green", "early", "silver", "gentle", "broken", "warm", "hidden",
        "narrow", "famous", "simple", "golden", "cold")
_NOUN = ("garden", "river", "teacher", "window", "bottle", "mountain", "doctor", "letter", "market", "kitchen",
         "engine", "basket", "harbour", "pencil", "village", "captain", "camera", "ticket", "forest", "table",
         "rabbit", "mirror", "station", "butter")
_VERB = ("found", "opened", "carried", "painted", "watched", "followed", "cleaned", "borrowed", "covered",
         "visited", "pushed", "measured", "dropped", "fixed", "wanted", "moved")
_PREP = ("near", "behind", "under", "beside", "across", "inside", "above", "past")


def _rng(seed, *keys):
    import numpy as np

    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def sentence(rng):
    words = [rng.choice(_DET), rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_VERB), rng.choice(_DET),
             rng.choice(_NOUN)]
    if rng.random() < 0.6:
        words += [rng.choice(_PREP), "the", rng.choice(_NOUN)]
    return " ".join(str(w) for w in words)


def _variants():
    import espeakng_loader

    folder = Path(espeakng_loader.get_data_path()) / "voices" / "!v"
    present = tuple(v for v in VARIANTS if (folder / v).is_file())
    if len(present) < 8:
        raise SpeechFTError(f"{folder}: too few eSpeak NG voice variants ({', '.join(present) or 'none'})")
    return present


def make_speakers(seed, n_speakers):
    variants = _variants()
    speakers = []
    for i in range(n_speakers):
        rng = _rng(seed, "speaker", i)
        variant = variants[(i + int(rng.integers(len(variants)))) % len(variants)]
        female = variant.startswith("f")
        speakers.append({
            "index": i,
            "accent": ACCENTS[int(rng.integers(len(ACCENTS)))],
            "variant": variant,
            "pitch": int(rng.integers(45, 80) if female else rng.integers(20, 60)),
            "range": int(rng.integers(25, 85)),
            "rate": int(rng.integers(145, 200)),
            "warp": round(float(rng.uniform(0.88, 1.12)), 4),
            "tilt": round(float(rng.uniform(-0.6, 0.6)), 3),
            "snr_db": round(float(rng.uniform(12, 30)), 2),
        })
    return speakers


def _speaker_roles(n_train, n_heldout):
    return {"train": list(range(n_train)), "dev": list(range(n_train, n_train + n_heldout)),
            "test": list(range(n_train + n_heldout, n_train + 2 * n_heldout))}


def _ks_speaker_name(seed, index, want_dev):
    """A Speech Commands speaker id that s3prl's hash split puts in validation (<10 %) or train (≥20 %)."""
    import re

    for attempt in range(10000):
        name = hashlib.sha1(f"{seed}-{index}-{attempt}".encode()).hexdigest()[:8]
        hashed = hashlib.sha1(re.sub(r"_nohash_.*$", "", f"{name}_nohash_0.wav").encode()).hexdigest()
        percentage = (int(hashed, 16) % (2 ** 27)) * (100.0 / (2 ** 27 - 1))
        if (percentage < 10) == want_dev and (want_dev or percentage >= 20):
            return name
    raise RuntimeError("no speaker name found")  # pragma: no cover


def plan(seed=0, size="default"):
    """Speakers and the list of utterance jobs (everything but the audio)."""
    sizes = SIZES[size]
    n_train = sizes["train_speakers"]
    n_speakers = n_train + 2 * sizes["heldout"]
    speakers = make_speakers(seed, n_speakers)
    roles = _speaker_roles(n_train, sizes["heldout"])
    split_of = {s: split for split, members in roles.items() for s in members}
    jobs = []

    def add(task, speaker, split, text, **extra):
        jobs.append(dict(id=f"{task}-{len(jobs):06d}", task=task, speaker=speaker, split=split, text=text, **extra))

    for s in range(n_speakers):
        rng = _rng(seed, "text", s)
        split = split_of[s]
        for _ in range(sizes["sentences"]):
            add("asr", s, split, sentence(rng))
        if s < n_train:
            for sid_split, count in zip(("train", "dev", "test"), sizes["sid"]):
                for _ in range(count):
                    add("sid", s, sid_split, sentence(rng))
        # every speaker says every keyword ks_reps times ("tiny": one keyword per speaker)
        for word in KEYWORDS * sizes["ks_reps"] or (KEYWORDS[s % len(KEYWORDS)],):
            add("ks", s, split, word, label=word)
        for _ in range(sizes["ks_unknown"]):
            word = str(rng.choice(UNKNOWN_WORDS))
            add("ks", s, split, word, label=word if split != "test" else "_unknown_")
        for _ in range(sizes["ic"]):
            action, obj, location = INTENTS[int(rng.integers(len(INTENTS)))]
            phrase = str(rng.choice(_ACTION_PHRASES[action]))
            where = "" if location == "none" else f" in the {location}"
            add("ic", s, split, phrase.format(o=obj, l=where), action=action, object=obj, location=location)
        for _ in range(sizes["er"]):
            text = sentence(rng)
            for style in PROSODY:
                add("er", s, split, text, label=style)
    _cover_ic_slots(jobs)
    for index, job in enumerate(jobs):
        job["noise_seed"] = int(_rng(seed, "noise", index).integers(2 ** 31))
    ks_names = {s: _ks_speaker_name(seed, s, split_of[s] == "dev") for s in range(n_speakers)}
    return {"seed": seed, "size": size, "speakers": speakers, "roles": roles, "ks_names": ks_names, "jobs": jobs}


def _cover_ic_slots(jobs):
    """Make every IC slot value heard in dev/test also occur in train, in place.

    s3prl's fluent_commands builds its label vocabulary from the train table alone and crashes on
    an unseen value. Random draws cover all values at the default and quick sizes (so this leaves
    them byte-identical); small sizes get train utterances re-assigned, in order, to intents that
    bring in the missing values.
    """
    train = [j for j in jobs if j["task"] == "ic" and j["split"] == "train"]
    needed = {(slot, j[slot]) for j in jobs if j["task"] == "ic" for slot in ("action", "object", "location")}

    def missing():
        return needed - {(slot, j[slot]) for j in train for slot in ("action", "object", "location")}

    for job in train:
        gap = missing()
        if not gap:
            return
        action, obj, location = max(INTENTS, key=lambda i: len(gap & {("action", i[0]), ("object", i[1]),
                                                                     ("location", i[2])}))
        phrase = _ACTION_PHRASES[action][0]
        where = "" if location == "none" else f" in the {location}"
        job.update(text=phrase.format(o=obj, l=where), action=action, object=obj, location=location)
    if missing():
        raise RuntimeError(f"too few train IC utterances to cover every intent slot value: {sorted(missing())}")


# --------------------------------------------------------------------------------------------
# audio


def _voice_settings(speaker, style=None):
    pitch, pitch_range, rate = speaker["pitch"], speaker["range"], speaker["rate"]
    if style == "excited":
        pitch, pitch_range, rate = pitch + 18, pitch_range + 30, rate * 1.25
    elif style == "calm":
        pitch, pitch_range, rate = pitch - 15, pitch_range - 22, rate * 0.78
    # the warp shortens audio by `warp`; slow the speech down by the same factor
    return (min(max(int(pitch), 0), 99), min(max(int(pitch_range), 2), 100),
            int(round(rate / speaker["warp"])))


def _text_for(job):
    text = job["text"]
    if job["task"] == "er":
        return text + {"neutral": ".", "question": "?", "excited": "!", "calm": "."}[job["label"]]
    if job["task"] == "ks":
        return text
    return text + "."


def _resampler(source_rate, warp):
    ratio = Fraction(SAMPLE_RATE, 1) / Fraction(source_rate * warp).limit_denominator(1000)
    ratio = ratio.limit_denominator(400)
    return ratio.numerator, ratio.denominator


def _render(engine, job, speaker):
    import numpy as np
    from scipy.signal import lfilter, resample_poly

    style = job.get("label") if job["task"] == "er" else None
    pitch, pitch_range, rate = _voice_settings(speaker, style)
    engine.set_voice(f"{speaker['accent']}+{speaker['variant']}", pitch=pitch, pitch_range=pitch_range, rate=rate)
    raw = engine.synth(_text_for(job), seed=job["noise_seed"]).astype(np.float64) / 32768.0
    phonemes = engine.phonemes(job["text"])
    up, down = _resampler(engine.sample_rate, speaker["warp"])
    wav = resample_poly(raw, up, down)
    # trim eSpeak's leading/trailing silence, keep 50 ms
    voiced = np.nonzero(np.abs(wav) > 0.01 * (np.abs(wav).max() + 1e-9))[0]
    if voiced.size:
        wav = wav[max(voiced[0] - 800, 0): voiced[-1] + 800]
    wav = lfilter([1.0, speaker["tilt"]], [1.0], wav)  # channel: first-order spectral tilt
    rng = np.random.default_rng(job["noise_seed"])
    if job["task"] == "ks":  # 1 s clip, word at a random offset
        if wav.size > SAMPLE_RATE:
            start = (wav.size - SAMPLE_RATE) // 2
            wav = wav[start:start + SAMPLE_RATE]
        clip = np.zeros(SAMPLE_RATE)
        offset = int(rng.integers(0, SAMPLE_RATE - wav.size + 1))
        clip[offset:offset + wav.size] = wav
        wav = clip
    wav = wav / (np.abs(wav).max() + 1e-9) * 0.5
    snr_db = speaker["snr_db"] + float(rng.uniform(-6, 6))
    noise = _noise(rng, wav.size, str(rng.choice(("white", "pink", "brown"))))
    power = np.mean(wav ** 2) + 1e-12
    wav = wav + noise * np.sqrt(power / (10 ** (snr_db / 10)) / (np.mean(noise ** 2) + 1e-12))
    wav = np.clip(wav, -1.0, 1.0)
    return wav.astype(np.float32), phonemes, round(snr_db, 2)


def _noise(rng, n, colour):
    import numpy as np
    from scipy.signal import lfilter

    white = rng.standard_normal(n)
    if colour == "pink":
        return lfilter([0.049922, -0.095993, 0.050612, -0.004408], [1, -2.494956, 2.017265, -0.522189], white)
    if colour == "brown":
        return lfilter([1.0], [1.0, -0.98], white)
    return white


def _shard_worker(payload):
    """One shard in a fresh process: synthesise its jobs in order, write wavs, return metadata."""
    import soundfile

    from speechft_upstream.data.espeak import Engine

    jobs, speakers, out = payload
    engine = Engine()
    results = []
    for job in jobs:
        wav, phonemes, snr = _render(engine, job, speakers[job["speaker"]])
        path = Path(out) / job["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16")
        results.append({"id": job["id"], "phonemes": phonemes, "samples": int(wav.size), "snr_db": snr})
    return results, engine.version


# --------------------------------------------------------------------------------------------
# layouts


def _paths(layout):
    """Fill in every job's relative wav path (the layout each s3prl downstream reads)."""
    ks_names = layout["ks_names"]
    counters = {}
    for job in layout["jobs"]:
        s, split, task = job["speaker"], job["split"], job["task"]
        key = (task, s, job.get("label"), split)
        n = counters[key] = counters.get(key, -1) + 1
        if task == "asr":
            spk = 1000 + s
            job["utt"] = f"{spk}-1-{n:04d}"
            job["path"] = f"asr/LibriSpeech/{split}/{spk}/1/{job['utt']}.wav"
        elif task == "sid":
            job["path"] = f"sid/all/wav/id{10001 + s}/{split}/{n:05d}.wav"
        elif task == "ks":
            root = "ks/test" if split == "test" else "ks/train"
            job["path"] = f"{root}/{job['label']}/{ks_names[s]}_nohash_{n}.wav"
        elif task == "ic":
            job["path"] = f"ic/wavs/speakers/spk{s:03d}/{job['id']}.wav"
        elif task == "er":
            job["path"] = f"er/wav/spk{s:03d}/{job['id']}.wav"


def _write_tables(out, layout):
    import numpy as np

    jobs = layout["jobs"]
    by_task = {}
    for job in jobs:
        by_task.setdefault(job["task"], []).append(job)

    # ASR: transcripts per speaker/chapter folder, bucket CSVs, char.dict
    (out / "asr" / "bucket").mkdir(parents=True, exist_ok=True)
    chars = {}
    folders = {}
    for job in by_task["asr"]:
        folders.setdefault(str(Path(job["path"]).parent), []).append(job)
        for ch in job["text"].upper().replace(" ", "|"):
            chars[ch] = chars.get(ch, 0) + 1
        chars["|"] = chars.get("|", 0) + 1
    for folder, members in folders.items():
        spk, chapter = Path(folder).parts[-2:]
        lines = [f"{j['utt']} {j['text'].upper()}" for j in members]
        (out / folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    for split in ("train", "dev", "test"):
        rows = [j for j in by_task["asr"] if j["split"] == split]
        with open(out / "asr" / "bucket" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["idx", "file_path", "length", "label"])
            for i, j in enumerate(rows):
                writer.writerow([i, j["path"].split("asr/LibriSpeech/", 1)[1], j["samples"], j["text"].upper()])
    (out / "asr" / "char.dict").write_text("".join(f"{c} {n}\n" for c, n in sorted(chars.items(), key=lambda kv: -kv[1])))

    # PR: CSVs over the ASR audio, phone vocabulary
    (out / "pr").mkdir(exist_ok=True)
    phones = set()
    for split in ("train", "dev", "test"):
        with open(out / "pr" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["wav_path", "phonemes", "transcription", "speaker"])
            for j in by_task["asr"]:
                if j["split"] == split:
                    seq = [p for word in j["phonemes"] for p in word]
                    phones.update(seq)
                    writer.writerow([os.path.relpath(j["path"], "pr"), " ".join(seq), j["text"], j["speaker"]])
    (out / "pr" / "phones.txt").write_text("".join(f"{p}\n" for p in sorted(phones)))

    # SID: VoxCeleb1 iden_split.txt (1 train, 2 dev, 3 test)
    code = {"train": 1, "dev": 2, "test": 3}
    lines = [f"{code[j['split']]} {j['path'].split('sid/all/wav/', 1)[1]}" for j in by_task["sid"]]
    (out / "sid" / "iden_split.txt").write_text("\n".join(lines) + "\n")

    # KS: background noise for _silence_ (train), 1 s silence clips (test)
    rng = _rng(layout["seed"], "ks-noise")
    noise_dir = out / "ks" / "train" / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    import soundfile

    for i, colour in enumerate(("white", "pink", "brown", "white", "pink", "brown")):
        noise = _noise(rng, SAMPLE_RATE * 10, colour)
        soundfile.write(str(noise_dir / f"{colour}_{i}.wav"),
                        (noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.05, 0.4)).astype(np.float32), SAMPLE_RATE,
                        subtype="PCM_16")
    silence_dir = out / "ks" / "test" / "_silence_"
    silence_dir.mkdir(parents=True, exist_ok=True)
    for i in range(max(4, len(layout["roles"]["test"]))):
        noise = _noise(rng, SAMPLE_RATE, ("white", "pink", "brown")[i % 3])
        soundfile.write(str(silence_dir / f"silence_nohash_{i}.wav"),
                        (noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.02, 0.3)).astype(np.float32), SAMPLE_RATE,
                        subtype="PCM_16")

    # IC: Fluent Speech Commands CSVs
    (out / "ic" / "data").mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train_data.csv"), ("dev", "valid_data.csv"), ("test", "test_data.csv")):
        with open(out / "ic" / "data" / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            rows = [j for j in by_task["ic"] if j["split"] == split]
            for i, j in enumerate(rows):
                writer.writerow([i, j["path"].split("ic/", 1)[1], f"spk{j['speaker']:03d}", j["text"], j["action"],
                                 j["object"], j["location"]])

    # ER (prosody): IEMOCAP-style fold 1: train+dev speakers train, test speakers test
    session = out / "er" / "meta_data" / "Session1"
    session.mkdir(parents=True, exist_ok=True)
    labels = {style: i for i, style in enumerate(PROSODY)}
    for name, splits in (("train_meta_data.json", ("train", "dev")), ("test_meta_data.json", ("test",))):
        meta = [{"path": j["path"].split("er/", 1)[1], "label": j["label"], "speaker": f"spk{j['speaker']:03d}"}
                for j in by_task["er"] if j["split"] in splits]
        (session / name).write_text(json.dumps({"labels": labels, "meta_data": meta}, indent=1))


def generate(out, seed=0, quick=False, workers=None, force=False, progress=None, size=None):
    """Write the corpus into ``out``; returns the manifest dict."""
    size = size or ("quick" if quick else "default")
    import multiprocessing

    say = progress or (lambda message: None)
    out = Path(out)
    manifest_path = out / "corpus.json"
    if out.exists() and any(out.iterdir()):
        if manifest_path.is_file() and not force:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("seed") == seed and manifest.get("size") == size and manifest.get("format") == FORMAT_VERSION:
                say(f"{out}: corpus already there (seed {seed}, {size}); reusing it")
                return manifest
        if not force:
            raise SpeechFTError(f"{out}: exists and is not this corpus (seed {seed}, {size}); "
                                "use --force to replace it")
        shutil.rmtree(out)
    started = time.time()
    layout = plan(seed, size)
    _paths(layout)
    jobs, speakers = layout["jobs"], layout["speakers"]
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    n_shards = SIZES[size]["shards"]
    shards = [jobs[i::n_shards] for i in range(n_shards)]
    workers = workers or min(2, os.cpu_count() or 1)
    say(f"synthesising {len(jobs)} utterances of {len(speakers)} speakers with eSpeak NG ({workers} processes)")
    results, version = {}, None
    context = multiprocessing.get_context("spawn")  # fresh eSpeak NG state for every shard
    with context.Pool(workers, maxtasksperchild=1) as pool:
        for done, (shard_results, version) in enumerate(
                pool.imap(_shard_worker, [(shard, speakers, str(tmp)) for shard in shards]), 1):
            for r in shard_results:
                results[r["id"]] = r
            say(f"shard {done}/{n_shards}")
    for job in jobs:
        job.update(results[job["id"]])
    _write_tables(tmp, layout)
    manifest = {"format": FORMAT_VERSION, "seed": seed, "size": size, "espeak_ng": version,
                "sample_rate": SAMPLE_RATE, "speakers": speakers,
                "roles": layout["roles"], "utterances": [
                    {k: job[k] for k in ("id", "task", "split", "speaker", "text", "phonemes", "path", "samples",
                                         "snr_db", "label", "action", "object", "location") if k in job}
                    for job in jobs]}
    hours = sum(j["samples"] for j in jobs) / SAMPLE_RATE / 3600
    manifest["hours"] = round(hours, 4)
    (tmp / "corpus.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    say(f"wrote {len(jobs)} utterances ({hours * 60:.1f} min of audio) to {out} in {time.time() - started:.0f} s")
    return manifest


def add_parser(sub):
    p = sub.add_parser("corpus", help="synthesise the offline mini-SUPERB corpus with eSpeak NG",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer utterances per speaker (for ./run.sh --quick)")
    p.add_argument("--workers", type=int, help="synthesis processes (default: min(2, CPUs)); output is the same")
    p.add_argument("--force", action="store_true", help="replace an existing corpus in DIR")
    p.set_defaults(func=_cli)


def _cli(args):
    import sys

    manifest = generate(args.out, seed=args.seed, quick=args.quick, workers=args.workers, force=args.force,
                        progress=lambda m: print(f"[corpus] {m}", file=sys.stderr, flush=True))
    counts = {}
    for u in manifest["utterances"]:
        counts[u["task"]] = counts.get(u["task"], 0) + 1
    print(f"{args.out}: {len(manifest['speakers'])} speakers, {manifest['hours'] * 60:.1f} min of audio, "
          f"eSpeak NG {manifest['espeak_ng']}; " + ", ".join(f"{t} {n}" for t, n in counts.items()))
