"""ASV: VoxCeleb1-style verification data for s3prl's ``sv_voxceleb1``, from audio already made.

No new synthesis: training speakers are the SID speakers (the training pool), with all their SID
utterances; the test speakers are the dev and test speakers of the corpus (never in any
training set), with their ASR sentences. Files are hard links where the file system allows.

Written under OUT/asv/:
- ``dev/wav/id<NNNNN>/<video>/<n>.wav``: training speakers (the folder s3prl trains on)
- ``test/wav/id<NNNNN>/v0/<n>.wav``: held-out speakers
- ``veri_test2.txt``: ``<1|0> idA/v0/<n>.wav idB/v0/<n>.wav`` (paths under test/wav): every
  same-speaker pair, and as many different-speaker pairs drawn at random
"""

import os
import shutil

from speechft_upstream.data.plan import rng_for


def _link(source, target):
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def trials(utterances, rng):
    """Target pairs: all within-speaker pairs; non-target pairs: as many, random, without repeats."""
    by_speaker = {}
    for speaker, path in utterances:
        by_speaker.setdefault(speaker, []).append(path)
    target = [(1, a[i], a[j]) for a in by_speaker.values() for i in range(len(a)) for j in range(i + 1, len(a))]
    pool = [(0, a, b) for i, (s, a) in enumerate(utterances) for t, b in utterances[i + 1:] if s != t]
    picked = rng.permutation(len(pool))[:len(target)]
    nontarget = [pool[k] for k in sorted(picked)]
    return sorted(target + nontarget, key=lambda t: (t[1], t[2]))


def write(out, layout):
    root = out / "asv"
    heldout = set(layout["roles"]["dev"]) | set(layout["roles"]["test"])
    # the extra dev utterances (dev_extra.py) stay out: ASV's lists are what they were before them
    jobs = [j for j in layout["jobs"] if not j.get("extra_dev")]
    for job in jobs:
        if job["task"] == "sid":
            speaker, video, name = job["path"].split("/")[-3:]
            _link(out / job["path"], root / "dev" / "wav" / speaker / video / name)
    tested = []
    counters = {}
    for job in jobs:
        if job["task"] == "asr" and job["speaker"] in heldout:
            n = counters[job["speaker"]] = counters.get(job["speaker"], -1) + 1
            rel = f"id{10001 + job['speaker']}/v0/{n:05d}.wav"
            _link(out / job["path"], root / "test" / "wav" / rel)
            tested.append((job["speaker"], rel))
    lines = [f"{label} {a} {b}" for label, a, b in trials(tested, rng_for(layout["seed"], "asv-trials"))]
    (root / "veri_test2.txt").write_text("\n".join(lines) + "\n")
