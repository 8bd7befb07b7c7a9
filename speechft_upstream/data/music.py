"""`speechft corpus --music OUT`: a synthetic music corpus (numpy and soundfile only, no eSpeak NG).

Clips are additive synthesis: six timbres (partials, envelopes, vibrato, inharmonic bell
partials), notes from MIDI 48 to 83, six chord qualities in random inversions, and 3-second
pieces in six genre-like styles that differ in tempo, meter, mode, accompaniment pattern,
percussion and instrumentation. Every clip gets random loudness and noise at 25–45 dB SNR.

Four classification tasks, each a folder in the IEMOCAP layout that s3prl 0.4.18's `emotion`
downstream reads (``-d emotion``; ``downstream_recipes/er.sh`` runs on it unchanged):

- ``pitch/``: one note, label its pitch class (12: C … B), any timbre and octave;
- ``chord/``: one chord, label its quality (maj, min, dim, aug, sus4, dom7), any root and timbre;
- ``instrument/``: one to three notes, label the timbre (6);
- ``genre/``: a 3 s piece, label its style (ballad, march, waltz, blues, techno, chorale).

Each task folder holds ``meta_data/Session1/{train,test}_meta_data.json`` ({"labels": {name: id},
"meta_data": [{"path", "label"}]}, paths relative to the task folder; the runner carves its dev
set out of train). The `emotion` layout rather than `speech_commands` folders because it takes
any label set and clip length, while `speech_commands` fixes 1 s clips and its 12 word classes.
The audio itself lies in ``wav/`` (16 kHz, 16-bit), which also serves as unlabelled music for
pre-training or for ``--audio`` / alignment statistics; ``music.json`` lists every clip with all
its attributes, the seed and the size. Deterministic for a seed: each clip draws from its own
random stream, keyed by (seed, task, index).
"""

import json
import shutil
import time
from pathlib import Path

import numpy as np

from speechft_upstream.errors import SpeechFTError

SR = 16000
FORMAT_VERSION = 1
NOTES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
CHORDS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus4": (0, 5, 7),
          "dom7": (0, 4, 7, 10)}
# partials (frequency ratio, amplitude, decay per second), attack s, vibrato (rate Hz, depth)
TIMBRES = {
    "flute": ([(1, 1.0, 0), (2, 0.2, 0), (3, 0.06, 0)], 0.06, (5.0, 0.004)),
    "clarinet": ([(k, 1.0 / k, 0) for k in (1, 3, 5, 7, 9, 11)], 0.03, (0.0, 0.0)),
    "strings": ([(k, 1.0 / k, 0) for k in range(1, 11)], 0.15, (6.0, 0.006)),
    "pluck": ([(k, 1.0 / k, 2.5 + 1.5 * k) for k in range(1, 13)], 0.003, (0.0, 0.0)),
    "organ": ([(0.5, 0.5, 0), (1, 1.0, 0), (2, 0.7, 0), (3, 0.4, 0), (4, 0.3, 0), (6, 0.2, 0), (8, 0.15, 0)],
              0.01, (0.0, 0.0)),
    "bell": ([(1, 1.0, 1.2), (2.756, 0.6, 2.0), (5.404, 0.4, 3.0), (8.933, 0.25, 4.5), (13.34, 0.2, 6.0)],
             0.002, (0.0, 0.0)),
}
INSTRUMENTS = tuple(TIMBRES)
GENRES = ("ballad", "march", "waltz", "blues", "techno", "chorale")
MAJOR, MINOR, BLUES = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10), (0, 3, 5, 6, 7, 10)
# clips per class: (train, test); "tiny" is for the test suite
SIZES = {"default": (40, 12), "quick": (12, 4), "tiny": (4, 2)}
TASKS = {"pitch": NOTES, "chord": tuple(CHORDS), "instrument": INSTRUMENTS, "genre": GENRES}


def midi_hz(m):
    return 440.0 * 2 ** ((m - 69) / 12)


def tone(instrument, midi, seconds, rng, velocity=1.0):
    """One note of ``instrument``: additive partials under an attack/decay/release envelope."""
    partials, attack, (rate, depth) = TIMBRES[instrument]
    n = max(int(seconds * SR), 1)
    t = np.arange(n) / SR
    f0 = midi_hz(midi) * (1 + rng.normal(0, 0.001))
    freq = f0 * (1 + depth * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    out = np.zeros(n)
    for ratio, amp, decay in partials:
        if ratio * f0 >= 0.45 * SR:
            continue
        detune = ratio * (1 + rng.normal(0, 0.0005))
        out += amp * np.exp(-decay * t) * np.sin(detune * phase + rng.uniform(0, 2 * np.pi))
    env = np.minimum(1.0, t / attack) * np.minimum(1.0, (seconds - t) / 0.04).clip(0, 1)
    if instrument == "flute":  # breath
        out += 0.03 * rng.standard_normal(n)
    return velocity * env * out / max(np.abs(out).max(), 1e-9)


def drum(kind, rng):
    """Kick (falling sine), snare (noise + 180 Hz) or hat (differentiated noise)."""
    t = np.arange(int(0.25 * SR)) / SR
    if kind == "kick":
        return np.sin(2 * np.pi * np.cumsum(50 + 70 * np.exp(-t / 0.03)) / SR) * np.exp(-t / 0.12)
    noise = rng.standard_normal(t.size)
    if kind == "snare":
        return (0.7 * noise + 0.5 * np.sin(2 * np.pi * 180 * t)) * np.exp(-t / 0.06)
    return np.diff(noise, prepend=0.0) * 0.4 * np.exp(-t / 0.02)


def _mix(events, seconds):
    out = np.zeros(int(seconds * SR) + SR // 4)
    for onset, wave in events:
        start = int(onset * SR)
        if start < len(out):
            piece = wave[:len(out) - start]
            out[start:start + len(piece)] += piece
    return out[:int(seconds * SR)]


def _genre_events(genre, rng):
    """(events, attributes) of a 3 s piece: chords I-IV-V-I in a random key, per-genre patterns."""
    tempo = {"ballad": (60, 76), "march": (108, 124), "waltz": (150, 180), "blues": (84, 100),
             "techno": (124, 136), "chorale": (54, 70)}[genre]
    bpm = float(rng.uniform(*tempo))
    beat, meter = 60.0 / bpm, 3 if genre == "waltz" else 4
    key = int(rng.integers(48, 60))
    mode = MINOR if genre == "techno" or (genre == "chorale" and rng.random() < 0.5) else MAJOR
    scale = BLUES if genre == "blues" else mode
    lead, comp = {"ballad": ("flute", "strings"), "march": ("clarinet", "pluck"), "waltz": ("flute", "pluck"),
                  "blues": ("clarinet", "pluck"), "techno": ("strings", "strings"),
                  "chorale": ("organ", "organ")}[genre]
    events, t, bar = [], 0.0, 0
    while t < 3.0:
        degree = (0, 3, 4, 0)[bar % 4]
        root = key + mode[degree]
        chord = [root + mode[(degree + s) % 7] - mode[degree] + 12 * ((degree + s) // 7) for s in (0, 2, 4)]
        for b in range(meter):
            on = t + b * beat
            if genre in ("ballad", "chorale") and b == 0:
                for m in chord + ([root - 12] if genre == "chorale" else []):
                    events.append((on, tone(comp, m, meter * beat, rng, 0.4)))
            elif genre in ("march", "waltz"):
                if b == 0 or (genre == "march" and b == 2):
                    events.append((on, tone(comp, root - 12, beat * 0.9, rng, 0.6)))
                else:
                    events += [(on, tone(comp, m, beat * 0.5, rng, 0.3)) for m in chord]
            elif genre == "blues":
                events += [(on, tone(comp, root - 12, beat * 0.6, rng, 0.4)),
                           (on + beat * 2 / 3, tone(comp, root - 5, beat * 0.3, rng, 0.3))]
            elif genre == "techno":
                events += [(on + q * beat / 4, tone(comp, key - 12, beat / 5, rng, 0.4)) for q in range(4)]
            if genre in ("march", "blues", "techno"):
                events.append((on, drum("kick", rng) if genre == "techno" or b % 2 == 0 else drum("snare", rng)))
                events.append((on + beat / 2 + (beat / 6 if genre == "blues" else 0), drum("hat", rng)))
            if genre not in ("chorale", "techno") and rng.random() < 0.8:
                steps = 2 if genre in ("march", "blues") else 1
                for s in range(steps):
                    m = key + 12 + scale[int(rng.integers(len(scale)))]
                    events.append((on + s * beat / steps, tone(lead, m, beat / steps * 0.9, rng, 0.5)))
        t += meter * beat
        bar += 1
    return events, {"bpm": round(bpm, 1), "meter": meter, "key": NOTES[key % 12]}


def render(task, label, rng):
    """(waveform float32, attributes) of one clip of ``task`` with class ``label``."""
    attrs = {}
    if task == "genre":
        events, attrs = _genre_events(label, rng)
        seconds = 3.0
    else:
        instrument = label if task == "instrument" else INSTRUMENTS[int(rng.integers(len(INSTRUMENTS)))]
        seconds = float(rng.uniform(1.0, 1.6))
        if task == "pitch":
            midi = NOTES.index(label) + 12 * int(rng.integers(4, 7))
            events = [(0.0, tone(instrument, midi, seconds, rng))]
            attrs = {"midi": midi}
        elif task == "chord":
            root = int(rng.integers(48, 65))
            notes = [root + i for i in CHORDS[label]]
            for _ in range(int(rng.integers(0, len(notes)))):  # inversions: lowest note up an octave
                notes = notes[1:] + [notes[0] + 12]
            events = [(0.015 * i * rng.random(), tone(instrument, m, seconds, rng, 0.6)) for i, m in enumerate(notes)]
            attrs = {"root": NOTES[root % 12], "notes": notes}
        else:
            base = int(rng.integers(52, 72))
            notes = [base + MAJOR[int(rng.integers(7))] for _ in range(int(rng.integers(1, 4)))]
            step = seconds / len(notes)
            events = [(i * step, tone(instrument, m, step, rng)) for i, m in enumerate(notes)]
            attrs = {"notes": notes}
        attrs["instrument"] = instrument
    wave = _mix(events, seconds)
    wave = wave / max(np.abs(wave).max(), 1e-9) * rng.uniform(0.3, 0.8)
    snr = float(rng.uniform(25, 45))
    wave = wave + rng.standard_normal(wave.size) * np.sqrt(np.mean(wave ** 2) / 10 ** (snr / 10))
    return wave.clip(-1, 1).astype(np.float32), {**attrs, "snr_db": round(snr, 1)}


def plan(seed, size):
    """Every clip's (task, label, split, index), in a fixed order."""
    n_train, n_test = SIZES[size]
    clips = []
    for task, labels in TASKS.items():
        for label in labels:
            for i in range(n_train + n_test):
                clips.append({"task": task, "label": label, "split": "train" if i < n_train else "test",
                              "id": f"{task}_{label.replace('#', 's')}_{i:03d}"})
    return clips


def generate(out, seed=0, size="default", force=False, progress=None):
    """Write the music corpus into ``out``; returns the manifest dict (reused when it matches)."""
    import soundfile

    say = progress or (lambda message: None)
    out = Path(out)
    manifest_path = out / "music.json"
    if out.exists() and any(out.iterdir()):
        if manifest_path.is_file() and not force:
            manifest = json.loads(manifest_path.read_text())
            if (manifest.get("seed"), manifest.get("size"), manifest.get("format")) == (seed, size, FORMAT_VERSION):
                say(f"{out}: music corpus already there (seed {seed}, {size}); reusing it")
                return manifest
        if not force:
            raise SpeechFTError(f"{out}: exists and is not this music corpus (seed {seed}, {size}); "
                                "use --force to replace it")
    started = time.time()
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "wav").mkdir(parents=True)
    clips = plan(seed, size)
    for n, clip in enumerate(clips, 1):
        rng = np.random.default_rng([seed, list(TASKS).index(clip["task"]), n])
        wave, attrs = render(clip["task"], clip["label"], rng)
        clip["path"] = f"wav/{clip['id']}.wav"
        soundfile.write(str(tmp / clip["path"]), wave, SR, subtype="PCM_16")
        clip.update(attrs, seconds=round(len(wave) / SR, 3))
        if n % 200 == 0:
            say(f"{n}/{len(clips)} clips")
    for task, labels in TASKS.items():
        session = tmp / task / "meta_data" / "Session1"
        session.mkdir(parents=True)
        for split in ("train", "test"):
            meta = [{"path": f"../{c['path']}", "label": c["label"]} for c in clips
                    if c["task"] == task and c["split"] == split]
            (session / f"{split}_meta_data.json").write_text(
                json.dumps({"labels": {label: i for i, label in enumerate(labels)}, "meta_data": meta}, indent=1))
    minutes = sum(c["seconds"] for c in clips) / 60
    manifest = {"format": FORMAT_VERSION, "seed": seed, "size": size, "sample_rate": SR, "minutes": round(minutes, 2),
                "tasks": {task: list(labels) for task, labels in TASKS.items()}, "clips": clips}
    (tmp / "music.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    say(f"wrote {len(clips)} clips ({minutes:.1f} min) to {out} in {time.time() - started:.0f} s")
    return manifest
