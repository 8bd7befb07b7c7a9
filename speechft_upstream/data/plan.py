"""What the corpus says, who says it and in which split: speakers, texts, labels (no audio).

Everything here is a pure function of the seed and the size, so the corpus is deterministic.
"""


import hashlib
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
FORMAT_VERSION = 3  # 2: sd/ and qbe/; 3: the extra dev utterances (dev_extra.py)

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


def rng_for(seed, *keys):
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
        rng = rng_for(seed, "speaker", i)
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


def plan(seed=0, size="default", dev_extra=True):
    """Speakers and the list of utterance jobs (everything but the audio); ``dev_extra=False``
    leaves out dev_extra.py's utterances (the tests compare the two)."""
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
        rng = rng_for(seed, "text", s)
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
    from speechft_upstream.data import layout_sf

    layout_sf.add_jobs(add, seed, size, split_of)  # after the others: their ids and noise seeds stay
    if dev_extra:
        from speechft_upstream.data import dev_extra as extra_dev

        extra_dev.add_jobs(add, jobs, seed, size, roles)  # after SF's, for the same reason
    for index, job in enumerate(jobs):
        job["noise_seed"] = int(rng_for(seed, "noise", index).integers(2 ** 31))
    ks_names = {s: _ks_speaker_name(seed, s, split_of[s] == "dev") for s in range(n_speakers)}
    return {"seed": seed, "size": size, "speakers": speakers, "roles": roles, "ks_names": ks_names, "jobs": jobs,
            "dev_extra": dev_extra}


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
