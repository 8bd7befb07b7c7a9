"""One utterance's audio: eSpeak NG voice settings, vocal-tract warp, channel tilt, noise.

Shards run in fresh processes (``shard_worker``) because eSpeak NG carries state from one
utterance to the next; within a shard the order is fixed, so the audio is deterministic.
"""


from fractions import Fraction
from pathlib import Path


from speechft_upstream.data.plan import SAMPLE_RATE



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
    noise = coloured_noise(rng, wav.size, str(rng.choice(("white", "pink", "brown"))))
    power = np.mean(wav ** 2) + 1e-12
    wav = wav + noise * np.sqrt(power / (10 ** (snr_db / 10)) / (np.mean(noise ** 2) + 1e-12))
    wav = np.clip(wav, -1.0, 1.0)
    return wav.astype(np.float32), phonemes, round(snr_db, 2)


def coloured_noise(rng, n, colour):
    from scipy.signal import lfilter

    white = rng.standard_normal(n)
    if colour == "pink":
        return lfilter([0.049922, -0.095993, 0.050612, -0.004408], [1, -2.494956, 2.017265, -0.522189], white)
    if colour == "brown":
        return lfilter([1.0], [1.0, -0.98], white)
    return white


def shard_worker(payload):
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
