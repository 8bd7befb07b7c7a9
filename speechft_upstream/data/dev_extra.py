"""The extra dev utterances: larger dev splits for PR, SID, KS, IC and ER, train and test untouched.

The benchmark chooses α on the dev splits, so a dev split must resolve differences of a few
points. The report's figure (``evaluate.stats.resolution``) is 1.96 · √2 · the bootstrap standard
error; for an accuracy near 50 % that is 2.77 · 0.5 / √n, so ≤ 5 points needs n ≥ 768 items, ≤ 7
points n ≥ 392. PER's standard error falls as 1 / √utterances: the default corpus's 60 dev
utterances resolved 4.5 points, so ≤ 2.5 points needs ≥ 60 · (4.5 / 2.5)² ≈ 194 utterances.
``EXTRA`` holds the per-speaker counts that reach those figures (the table in corpus.py).

Everything here comes from random streams of its own (``rng_for(seed, "dev-extra", task, s)``),
the jobs go after every other job (so earlier ids, paths, noise seeds stay) and into shards of
their own (``shard_group``), so the other utterances' audio is byte for byte what it was
without them. Each job carries ``extra_dev: True``: the pre-training data (pretrain/data.py)
and the ASV layout (built from SID and held-out ASR audio) leave these out, and ER's go to a
``dev_meta_data.json`` of their own rather than into the training list s3prl carves its dev
from (compat/emotion_dev.py adds them to that dev).

Each task's dev split keeps its definition: PR, KS and IC dev are the held-out dev speakers
(KS's names hash to s3prl's validation list), SID dev is more utterances of the 60 training
speakers, ER dev is drawn from the same speakers as its training list (train + dev speakers),
four prosody styles per sentence. Labels come from the same sets; IC intents only from those
whose slot values all occur in train (s3prl builds the IC vocabulary from train alone).
"""

from speechft_upstream.data.plan import (_ACTION_PHRASES, INTENTS, KEYWORDS, PROSODY, UNKNOWN_WORDS,
                                         rng_for, sentence)

# Extra dev utterances per speaker (KS: keyword repetitions and unknown words; ER: sentences,
# each in the four styles). "tiny" (the tests) gets one of each, to exercise the path.
EXTRA = {
    "default": {"pr": 14, "sid": 12, "ks_reps": 5, "ks_unknown": 10, "ic": 78, "er": 3},
    "quick": {"pr": 14, "sid": 6, "ks_reps": 5, "ks_unknown": 10, "ic": 67, "er": 1},
    "tiny": {"pr": 1, "sid": 1, "ks_reps": 0, "ks_unknown": 1, "ic": 1, "er": 1},
}
GROUP = "dev-extra"


def add_jobs(add, jobs, seed, size, roles):
    """Append the extra dev jobs (``add`` as in plan.plan)."""
    extra = EXTRA.get(size)
    if not extra:
        return
    dev, train = roles["dev"], roles["train"]
    ic_train = [j for j in jobs if j["task"] == "ic" and j["split"] == "train"]
    heard = {(slot, j[slot]) for j in ic_train for slot in ("action", "object", "location")}
    intents = [i for i in INTENTS if {("action", i[0]), ("object", i[1]), ("location", i[2])} <= heard]

    def put(task, speaker, text, **more):
        add(task, speaker, "dev", text, extra_dev=True, shard_group=GROUP, **more)

    for s in dev:
        rng = rng_for(seed, GROUP, "pr", s)
        for _ in range(extra["pr"]):
            put("asr", s, sentence(rng))
    for s in train:
        rng = rng_for(seed, GROUP, "sid", s)
        for _ in range(extra["sid"]):
            put("sid", s, sentence(rng))
    for s in dev:
        rng = rng_for(seed, GROUP, "ks", s)
        for word in KEYWORDS * extra["ks_reps"]:
            put("ks", s, word, label=word)
        for _ in range(extra["ks_unknown"]):
            word = str(rng.choice(UNKNOWN_WORDS))
            put("ks", s, word, label=word)
    for s in dev:
        rng = rng_for(seed, GROUP, "ic", s)
        for _ in range(extra["ic"]):
            action, obj, location = intents[int(rng.integers(len(intents)))]
            phrase = str(rng.choice(_ACTION_PHRASES[action]))
            where = "" if location == "none" else f" in the {location}"
            put("ic", s, phrase.format(o=obj, l=where), action=action, object=obj, location=location)
    for s in train + dev:
        rng = rng_for(seed, GROUP, "er", s)
        for _ in range(extra["er"]):
            text = sentence(rng)
            for style in PROSODY:
                put("er", s, text, label=style)


def is_extra(job):
    return bool(job.get("extra_dev"))
