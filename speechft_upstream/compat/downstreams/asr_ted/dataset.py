"""TED-LIUM release 3 segments (``sph/<talk>.sph`` + ``stm/<talk>.stm``) for ``-d asr_ted``.

A split is a list of folders under ``ted_root``, each holding ``sph/`` and ``stm/`` (release 3:
``data`` for training, ``legacy/dev`` and ``legacy/test``, the splits of the Hugging Face
``LIUM/tedlium`` release3 loader the authors used). A segment is one STM line
(``talk channel speaker start end <label> words...``); ``ignore_time_segment_in_scoring`` lines
are left out. Audio is read from the SPHERE file with soundfile, only the segment's samples.

Text and selection follow the authors' preparation (Speech-FT, preprocess_ted.py and
asr_ted/dataset.py): upper case, `` '`` joined to the word before (``i 've`` -> ``I'VE``), ``-``
to a space, only A-Z, ``'`` and spaces kept. Every split keeps segments of ``min_seconds`` to
``max_seconds`` (1-60 s) whose STM text has no ``<unk>``; ``train_hours`` > 0 keeps, for train,
segments in talk-name and STM order until their total passes that many hours (the authors: 10).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data.dataset import Dataset

from speechft_upstream.errors import SpeechFTError

SAMPLE_RATE = 16000
# As s3prl's asr dataset (and the authors' copy of it): a bucket whose longest utterance exceeds
# this many *samples* is split in two, so in practice every training bucket of 2+ is halved.
HALF_BATCHSIZE_TIME = 2000
IGNORE = "ignore_time_segment_in_scoring"


@dataclass
class Segment:
    sph: str
    start: float
    end: float
    text: str  # normalised
    name: str

    @property
    def seconds(self):
        return self.end - self.start


def normalise(text):
    text = text.upper().replace(" '", "'").replace("-", " ")
    return " ".join(re.sub(r"[^ A-Z']", "", text).split())


def read_stm(stm, sph):
    segments = []
    for number, line in enumerate(stm.read_text(errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        fields = line.split()
        if len(fields) < 6:
            raise SpeechFTError(f"{stm}:{number}: not an STM line (talk channel speaker start end [<label>] words)")
        try:
            start, end = float(fields[3]), float(fields[4])
        except ValueError:
            raise SpeechFTError(f"{stm}:{number}: start/end {fields[3]!r} {fields[4]!r} are not numbers") from None
        words = fields[6:] if fields[5].startswith("<") else fields[5:]
        raw = " ".join(words)
        if raw == IGNORE or end <= start:
            continue
        segments.append((Segment(str(sph), start, end, normalise(raw), f"{stm.stem}-{start:09.2f}-{end:09.2f}"), raw))
    return segments


def split_segments(root, folders):
    out = []
    for folder in folders:
        base = Path(root) / folder
        stm_dir, sph_dir = base / "stm", base / "sph"
        if not stm_dir.is_dir() or not sph_dir.is_dir():
            raise SpeechFTError(f"{base}: expected sph/ and stm/ folders (TED-LIUM release 3 layout)")
        stms = sorted(stm_dir.glob("*.stm"))
        if not stms:
            raise SpeechFTError(f"{stm_dir}: no .stm files")
        for stm in stms:
            sph = sph_dir / f"{stm.stem}.sph"
            if not sph.is_file():
                raise SpeechFTError(f"{sph}: missing (the audio of {stm})")
            out += read_stm(stm, sph)
    return out


def select(segments, min_seconds=1.0, max_seconds=60.0, drop_unk=True, hours=0):
    kept, total = [], 0.0
    for segment, raw in segments:
        if not min_seconds <= segment.seconds <= max_seconds or (drop_unk and "<unk>" in raw) or not segment.text:
            continue
        kept.append(segment)
        total += segment.seconds
        if hours and total > hours * 3600:  # the authors stop once the total passes the budget
            break
    return kept


class TedliumDataset(Dataset):
    """Buckets of segments, longest first, as s3prl's asr SequenceDataset makes them."""

    def __init__(self, split, bucket_size, dictionary, ted_root, **datarc):
        if split not in datarc:
            raise SpeechFTError(f"asr_ted: no folders for split {split!r} in the config's datarc")
        segments = select(split_segments(ted_root, datarc[split]), float(datarc.get("min_seconds", 1)),
                          float(datarc.get("max_seconds", 60)), bool(datarc.get("drop_unk", True)),
                          float(datarc.get("train_hours", 0) or 0) if split == "train" else 0)
        if not segments:
            raise SpeechFTError(f"{ted_root}: split {split!r} ({', '.join(datarc[split])}) has no segment left "
                                "after the length and <unk> filters")
        hours = sum(s.seconds for s in segments) / 3600
        print(f"[asr_ted] - {split}: {len(segments)} segments, {hours:.4g} h from {', '.join(datarc[split])}", flush=True)
        self.dictionary = dictionary
        self.labels = {s.name: self.encode(s.text) for s in segments}
        segments.sort(key=lambda s: s.seconds, reverse=True)
        self.X, batch = [], []
        for segment in segments:
            batch.append(segment)
            if len(batch) == bucket_size:
                longest = max(int(s.seconds * SAMPLE_RATE) for s in batch)
                if bucket_size >= 2 and longest > HALF_BATCHSIZE_TIME:
                    self.X += [batch[:bucket_size // 2], batch[bucket_size // 2:]]
                else:
                    self.X.append(batch)
                batch = []
        if batch:
            self.X.append(batch)

    def encode(self, text):
        import torch

        ids = [self.dictionary.index(c) for c in text.replace(" ", "|")]
        if self.dictionary.unk() in ids:
            raise SpeechFTError(f"asr_ted: a character of {text!r} is not in the vocabulary")
        return torch.LongTensor(ids)

    @staticmethod
    def load(segment):
        import soundfile

        with soundfile.SoundFile(segment.sph) as audio:
            if audio.samplerate != SAMPLE_RATE:
                raise SpeechFTError(f"{segment.sph}: {audio.samplerate} Hz audio; asr_ted needs {SAMPLE_RATE} Hz")
            audio.seek(int(round(segment.start * SAMPLE_RATE)))
            wav = audio.read(int(round(segment.seconds * SAMPLE_RATE)), dtype="float32", always_2d=True)
        return wav.mean(axis=1)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        batch = self.X[index]
        return ([self.load(s) for s in batch], [self.labels[s.name].numpy() for s in batch],
                [s.name for s in batch])

    def collate_fn(self, items):
        assert len(items) == 1  # the bucket is the batch (s3prl's asr convention)
        return items[0][0], items[0][1], items[0][2]
