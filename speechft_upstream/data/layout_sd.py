"""SD: two-speaker mixtures with overlapping speech, as Kaldi data folders with RTTMs.

Each mixture has three turns, A B A: speaker B starts before A's first turn ends (an overlap
of 25-60 % of the shorter turn), A comes back near B's end (a gap or overlap of up to 0.4 s,
never overlapping A's own first turn). Turns are utterances synthesised like the others
(``sd/sources/<split>/<id>.wav``) and added at their offsets. Train mixtures use training
speakers, dev and test mixtures the held-out dev and test speakers.

``sd/{train,dev,test}/`` hold what s3prl 0.4.18's ``diarization`` dataset reads (``KaldiData``):
``wav.scp`` (``<rec> <absolute wav path>``), ``segments`` (``<utt> <rec> <start> <end>``),
``utt2spk``, ``spk2utt``, ``reco2dur`` (``<rec> <seconds>``), plus ``rttm`` (the reference,
``SPEAKER <rec> 1 <start> <dur> <NA> <NA> <spk> <NA> <NA>``) for scoring, and the mixtures in
``wav/<rec>.wav``. A turn's segment is its source file less the 50 ms of silence that the
renderer keeps at each end. wav.scp paths are absolute (Kaldi style), so a moved corpus needs
them rewritten.
"""

from pathlib import Path

from speechft_upstream.data.plan import SAMPLE_RATE, rng_for, sentence

# mixtures per split (train, dev, test)
MIXTURES = {"default": (24, 6, 6), "quick": (12, 4, 4), "tiny": (2, 1, 1)}
EDGE = 0.05  # seconds of silence render.py keeps before and after the speech
LEAD = 0.2


def plan_jobs(seed, size, roles):
    """The source utterances (task "sd"), three per mixture, in a fixed order."""
    jobs = []
    for split, count in zip(("train", "dev", "test"), MIXTURES[size]):
        pool = roles[split]
        for m in range(count):
            rng = rng_for(seed, "sd", split, m)
            a, b = (int(x) for x in rng.choice(pool, 2, replace=False))
            rec = f"{split}_{m:04d}"
            for turn, speaker in enumerate((a, b, a)):
                n = len(jobs)
                jobs.append({"id": f"sd-{n:06d}", "task": "sd", "speaker": speaker, "split": split,
                             "text": sentence(rng), "recording": rec, "turn": turn,
                             "noise_seed": int(rng_for(seed, "sd-noise", n).integers(2 ** 31)),
                             "path": f"sd/sources/{split}/sd-{n:06d}.wav"})
    return jobs


def _offsets(rng, lengths):
    """Start times (s) of the turns A, B, A given their lengths (s)."""
    a1, b, a2 = lengths
    start_a1 = LEAD
    overlap = rng.uniform(0.25, 0.6) * min(a1, b)
    start_b = start_a1 + a1 - overlap
    start_a2 = max(start_b + b + rng.uniform(-0.4, 0.4), start_a1 + a1 + 0.1)
    return start_a1, start_b, start_a2


def write(tmp, final, seed, jobs):
    """Mix the rendered sources in ``tmp`` and write the Kaldi folders (paths under ``final``)."""
    import numpy as np
    import soundfile

    tmp, final = Path(tmp), Path(final).resolve()
    recordings = {}
    for job in jobs:
        recordings.setdefault((job["split"], job["recording"]), []).append(job)
    tables = {}
    for (split, rec), turns in recordings.items():
        turns = sorted(turns, key=lambda j: j["turn"])
        audio = [soundfile.read(str(tmp / j["path"]), dtype="float64")[0] for j in turns]
        starts = _offsets(rng_for(seed, "sd-mix", split, rec), [a.size / SAMPLE_RATE for a in audio])
        first = [int(round(s * SAMPLE_RATE)) for s in starts]
        total = max(f + a.size for f, a in zip(first, audio)) + int(LEAD * SAMPLE_RATE)
        mix = np.zeros(total)
        for f, a in zip(first, audio):
            mix[f:f + a.size] += a
        mix *= min(1.0, 0.9 / (np.abs(mix).max() + 1e-9))
        wav = tmp / "sd" / split / "wav" / f"{rec}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(wav), mix.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        t = tables.setdefault(split, {"wav.scp": [], "segments": [], "utt2spk": [], "reco2dur": [], "rttm": [],
                                      "spk2utt": {}})
        t["wav.scp"].append(f"{rec} {final / 'sd' / split / 'wav' / f'{rec}.wav'}")
        t["reco2dur"].append(f"{rec} {total / SAMPLE_RATE:.4f}")
        for k, (job, f, a) in enumerate(zip(turns, first, audio)):
            spk = f"spk{job['speaker']:03d}"
            utt = f"{spk}-{rec}-{k}"
            st, et = f / SAMPLE_RATE + EDGE, (f + a.size) / SAMPLE_RATE - EDGE
            t["segments"].append(f"{utt} {rec} {st:.3f} {et:.3f}")
            t["utt2spk"].append(f"{utt} {spk}")
            t["spk2utt"].setdefault(spk, []).append(utt)
            t["rttm"].append(f"SPEAKER {rec} 1 {st:.3f} {et - st:.3f} <NA> <NA> {spk} <NA> <NA>")
    for split, t in tables.items():
        folder = tmp / "sd" / split
        t["spk2utt"] = [f"{spk} {' '.join(sorted(utts))}" for spk, utts in sorted(t["spk2utt"].items())]
        for name in ("wav.scp", "segments", "utt2spk", "spk2utt", "reco2dur", "rttm"):
            lines = t[name] if name in ("rttm", "segments") else sorted(t[name])
            (folder / name).write_text("\n".join(lines) + "\n")
