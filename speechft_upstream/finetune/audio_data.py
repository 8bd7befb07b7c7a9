"""Unlabelled audio for unsupervised fine-tuning: every .wav/.flac under a folder, 16 kHz mono.

Files are checked up front with ``soundfile.info`` (rate, channels, length), so a bad file is
named before any training starts. Batches are random crops: each batch is cut to the length of
its shortest file, at most ``max_samples`` (HuBERT's own pre-training crops the same way), so no
padding is needed.
"""

import os
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

SAMPLE_RATE = 16000
EXTENSIONS = (".wav", ".flac")


def find_audio(folder):
    folder = Path(folder)
    if not folder.exists():
        raise SpeechFTError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SpeechFTError(f"{folder}: is not a folder (give the folder that holds the audio)")
    paths = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        paths += [Path(root) / f for f in sorted(files) if f.lower().endswith(EXTENSIONS)]
    if not paths:
        raise SpeechFTError(f"{folder}: no .wav or .flac files in it (searched sub-folders too)")
    return paths


def _describe(path):
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as err:  # libsndfile raises RuntimeError/LibsndfileError/TypeError variously
        raise SpeechFTError(f"{path}: cannot read audio ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
    if info.samplerate != SAMPLE_RATE:
        raise SpeechFTError(f"{path}: sample rate is {info.samplerate} Hz; 16000 Hz audio is needed (resample it first)")
    if info.channels != 1:
        raise SpeechFTError(f"{path}: has {info.channels} channels; mono audio is needed")
    return info.frames


class AudioFolder:
    """The checked file list, and random cropped batches drawn from it."""

    def __init__(self, folder, min_samples):
        self.folder = Path(folder)
        entries = [(path, _describe(path)) for path in find_audio(folder)]
        self.skipped = [path for path, n in entries if n < min_samples]
        self.files = [(path, n) for path, n in entries if n >= min_samples]
        if not self.files:
            raise SpeechFTError(
                f"{folder}: all {len(entries)} audio files are shorter than {min_samples / SAMPLE_RATE:.2f} s, "
                "too short for HuBERT masking"
            )

    @property
    def seconds(self):
        return sum(n for _, n in self.files) / SAMPLE_RATE

    def batch(self, rng, batch_size, max_samples):
        """A (B, T) float32 tensor: ``batch_size`` random files, each randomly cropped to T samples."""
        import numpy as np
        import soundfile
        import torch

        picks = rng.choice(len(self.files), size=batch_size, replace=len(self.files) < batch_size)
        chosen = [self.files[i] for i in picks]
        length = min(max_samples, min(n for _, n in chosen))
        rows = []
        for path, n in chosen:
            start = int(rng.integers(0, n - length + 1))
            try:
                data, _ = soundfile.read(str(path), start=start, frames=length, dtype="float32", always_2d=False)
            except Exception as err:
                raise SpeechFTError(f"{path}: cannot read audio ({type(err).__name__}: {err})") from None
            if data.shape[0] != length:
                raise SpeechFTError(f"{path}: read {data.shape[0]} samples where {length} were expected (file changed or truncated?)")
            rows.append(np.ascontiguousarray(data))
        return torch.from_numpy(np.stack(rows))
