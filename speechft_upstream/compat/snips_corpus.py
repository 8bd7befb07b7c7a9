"""The ``snips`` corpus of s3prl's ``ctc`` downstream (SUPERB SF), which PyPI s3prl 0.4.18 lacks.

``s3prl/downstream/ctc/data.py`` imports ``from .corpus.snips import SnipsDataset`` when
``corpus.name`` is ``snips``; the ``corpus`` package is not in the PyPI sdist, so
``ctc_corpus.install`` registers this module as ``s3prl.downstream.ctc.corpus.snips``.

Data layout (``corpus.path``), as the Audio SNIPS preparation of s3prl writes it:

- ``all.iob.snips.txt``: one line per utterance, ``<uid> BOS W1 ... Wn EOS<TAB>O S1 ... Sn INTENT``
  with upper-case words and one slot name (or ``O``) per word, no B-/I- prefixes;
- ``slots.txt``: ``O`` on the first line (the text encoder skips it), then one slot name a line;
- ``<split>/**/<uid>.wav`` for each folder named by the config's ``train`` / ``dev`` / ``test``
  lists (``train``, ``valid``, ``test``), with ``uid`` = ``<Speaker>-snips-<split>-<n>``.

``<split>_speakers`` (``train_speakers``, ``valid_speakers``, ``test_speakers``) keeps the wavs
whose uid starts with one of those speaker names (SUPERB's subsets of the 16 Polly voices); left
empty, every speaker in the folder is used. In ``character`` mode (no slots) the text comes from
``all-trans.txt`` (``<uid> TEXT``) instead.
"""

import logging
from pathlib import Path

from torch.utils.data import Dataset

from speechft_upstream.errors import SpeechFTError

log = logging.getLogger("speechft.compat")

LAYOUT = "SF data: see downstream_recipes/README.md"


def read_transcripts(path):
    """uid -> the rest of the line (s3prl's encoders parse it)."""
    if not path.is_file():
        raise SpeechFTError(f"{path}: no such file ({LAYOUT})")
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, rest = line.strip().partition(" ")
        if not rest:
            raise SpeechFTError(f"{path}:{number}: expected '<uid> <text>'")
        table[uid] = rest
    return table


def check_slot_line(rest, tokenizer, where):
    """What CharacterTextSlotEncoder.encode assumes, checked so a bad line is named, not a KeyError."""
    text, tab, iobs = rest.partition("\t")
    words, tags = text.split(" "), iobs.split(" ")
    if not tab or len(words) < 3 or words[0] != "BOS" or words[-1] != "EOS":
        raise SpeechFTError(f"{where}: expected 'BOS W1 ... Wn EOS<TAB>O S1 ... Sn INTENT'")
    if len(tags) != len(words):
        raise SpeechFTError(f"{where}: {len(words) - 2} words but {len(tags) - 2} slot tags")
    known = getattr(tokenizer, "slot2id", {})
    for tag in tags[1:-1]:
        if tag != "O" and f"B-{tag}" not in known:
            raise SpeechFTError(f"{where}: slot {tag!r} is not in the slots file")


class SnipsDataset(Dataset):
    """Utterances and character(+slot) token sequences for ``-d ctc`` with ``corpus.name: snips``."""

    def __init__(self, split, tokenizer, bucket_size, path, ascending=False, **kwargs):
        folders = [split] if isinstance(split, str) else list(split)
        root = Path(path)
        self.bucket_size = max(1, int(bucket_size))
        slots = str(getattr(tokenizer, "token_type", "")).endswith("-slot")
        table_path = root / ("all.iob.snips.txt" if slots else "all-trans.txt")
        transcripts = read_transcripts(table_path)
        speakers = kwargs.get(f"{folders[0]}_speakers") or None
        files, unlabelled = [], 0
        for folder in folders:
            if not (root / folder).is_dir():
                raise SpeechFTError(f"{root / folder}: no such folder ({LAYOUT})")
            for wav in sorted((root / folder).rglob("*.wav")):
                if wav.stem not in transcripts:
                    unlabelled += 1
                elif speakers is None or wav.stem.split("-", 1)[0] in speakers:
                    files.append(wav)
        if unlabelled:
            log.warning("%s: %d wav file(s) in %s have no line in %s", root, unlabelled, "/".join(folders), table_path.name)
        if not files:
            who = f" of speakers {', '.join(map(str, speakers))}" if speakers else ""
            raise SpeechFTError(f"{root}: no labelled wav{who} in {', '.join(folders)}/ ({LAYOUT})")
        texts = []
        for wav in files:
            rest = transcripts[wav.stem]
            if slots:
                check_slot_line(rest, tokenizer, f"{table_path}: {wav.stem}")
            texts.append(tokenizer.encode(rest))
        pairs = sorted(zip(map(str, files), texts), key=lambda pair: len(pair[1]), reverse=not ascending)
        self.file_list, self.text = (list(x) for x in zip(*pairs))
        log.info("%s %s: %d utterances", root, "/".join(folders), len(self.file_list))

    def __getitem__(self, index):
        if self.bucket_size > 1:  # a bucket of neighbours in length order (the loader batch size is 1)
            start = max(0, min(len(self.file_list) - self.bucket_size, index))
            end = start + self.bucket_size
            return list(zip(self.file_list[start:end], self.text[start:end]))
        return self.file_list[index], self.text[index]

    def __len__(self):
        return len(self.file_list)
