"""The corpus package of s3prl's ``ctc`` downstream, which s3prl 0.4.18 on PyPI does not ship.

``s3prl/downstream/ctc/data.py`` imports its datasets lazily with
``from .corpus.libriphone import LibriPhoneDataset`` (phoneme recognition, SUPERB PR); the
``corpus`` package is absent from the PyPI sdist, so ``-d ctc`` dies when the first dataloader
is built. ``install()`` registers ``s3prl.downstream.ctc.corpus`` with its ``libriphone`` module
(this file) and ``snips`` (``snips_corpus.py``, SF), only where s3prl has no corpus package of
its own.

It also stops ``ctc/data.py``'s ``load_dataset`` from popping ``num_workers`` out of the
experiment config on the first call (every later split then ran with 12 workers).

Data layout (``corpus.csv_dir``): ``train.csv``, ``dev.csv``, ``test.csv`` (names from the
config's ``train``/``dev``/``test`` keys), columns ``wav_path`` (absolute, or relative to
``csv_dir``) and either ``phonemes`` (space-separated phones of the vocabulary) or
``transcription`` (words, turned into phones with the ``lexicon`` files: ``WORD PH PH ...`` per
line, first pronunciation wins), like s3prl's own ``libriphone`` corpus.
"""

import logging
import os
import sys
import types
from pathlib import Path

from torch.utils.data import Dataset

from speechft_upstream.errors import SpeechFTError

log = logging.getLogger("speechft.compat")

PACKAGE = "s3prl.downstream.ctc.corpus"
_MARK = "_speechft"


def read_lexicon(paths, vocab):
    """word -> phones from lexicon files (first pronunciation of a word wins)."""
    word2phones = {}
    for path in paths or ():
        if not os.path.isfile(path):
            raise SpeechFTError(f"{path}: lexicon not found (needed for a CSV without a `phonemes` column)")
        with open(path) as handle:
            for number, line in enumerate(handle, 1):
                word, *phones = line.replace("\t", " ").split()
                if not phones:
                    continue
                unknown = [p for p in phones if p not in vocab]
                if unknown:
                    raise SpeechFTError(f"{path}:{number}: phone {unknown[0]!r} is not in the phone vocabulary")
                word2phones.setdefault(word, phones)
    return word2phones


class LibriPhoneDataset(Dataset):
    """Utterances and phone sequences for ``-d ctc`` with ``corpus.name: libriphone``."""

    def __init__(self, split_csv, tokenizer, bucket_size, csv_dir, lexicon=(), ascending=False, **kwargs):
        import pandas as pd

        self.bucket_size = max(1, int(bucket_size))
        csv_path = Path(csv_dir) / split_csv
        if not csv_path.is_file():
            raise SpeechFTError(f"{csv_path}: no such file (PR data: see downstream_recipes/README.md)")
        table = pd.read_csv(csv_path, keep_default_na=False)
        if "wav_path" not in table.columns or not ({"phonemes", "transcription"} & set(table.columns)):
            raise SpeechFTError(f"{csv_path}: needs columns wav_path and phonemes (or transcription + lexicon)")
        vocab = set(getattr(tokenizer, "_vocab2idx", {}))
        if "phonemes" in table.columns:
            phone_lines = [str(p).split() for p in table["phonemes"]]
        else:
            word2phones = read_lexicon([lexicon] if isinstance(lexicon, str) else lexicon, vocab)
            phone_lines = []
            for text in table["transcription"]:
                phones = []
                for word in str(text).split():
                    if word not in word2phones:
                        raise SpeechFTError(f"{csv_path}: word {word!r} is in no lexicon file")
                    phones += word2phones[word]
                phone_lines.append(phones)
        for row, phones in enumerate(phone_lines):
            unknown = [p for p in phones if vocab and p not in vocab]
            if unknown or not phones:
                what = f"phone {unknown[0]!r} is not in the vocabulary" if unknown else "no phones"
                raise SpeechFTError(f"{csv_path}: row {row + 2}: {what}")
        files = [p if os.path.isabs(p) else str(Path(csv_dir) / p) for p in map(str, table["wav_path"])]
        texts = [tokenizer.encode(" ".join(phones)) for phones in phone_lines]
        pairs = sorted(zip(files, texts), key=lambda pair: len(pair[1]), reverse=not ascending)
        if not pairs:
            raise SpeechFTError(f"{csv_path}: no utterances")
        self.file_list, self.text = (list(x) for x in zip(*pairs))

    def __getitem__(self, index):
        if self.bucket_size > 1:
            start = max(0, min(len(self.file_list) - self.bucket_size, index))
            end = start + self.bucket_size
            return list(zip(self.file_list[start:end], self.text[start:end]))
        return self.file_list[index], self.text[index]

    def __len__(self):
        return len(self.file_list)


def _has_own_corpus():
    ctc = sys.modules.get("s3prl.downstream.ctc")
    if ctc is None:
        import importlib

        ctc = importlib.import_module("s3prl.downstream.ctc")
    return any(os.path.isdir(os.path.join(p, "corpus")) for p in getattr(ctc, "__path__", ()))


def _register_corpus():
    if PACKAGE in sys.modules or _has_own_corpus():
        return
    package = types.ModuleType(PACKAGE, "speechft's stand-in for s3prl's missing ctc corpus package")
    package.__path__ = []  # a package, so `from .corpus.libriphone import ...` resolves
    package.__package__ = PACKAGE
    this = sys.modules[__name__]
    from speechft_upstream.compat import snips_corpus  # SF: corpus.name snips

    package.libriphone, package.snips = this, snips_corpus
    sys.modules[PACKAGE] = package
    sys.modules[PACKAGE + ".libriphone"] = this
    sys.modules[PACKAGE + ".snips"] = snips_corpus
    sys.modules["s3prl.downstream.ctc"].corpus = package
    log.debug("registered %s (libriphone, snips) from speechft", PACKAGE)


def _keep_num_workers(expert_module):
    load_dataset = getattr(expert_module, "load_dataset", None)
    if load_dataset is None or getattr(load_dataset, _MARK, False):
        return

    def keep_config(split, tokenizer, corpus):
        return load_dataset(split, tokenizer, dict(corpus))  # it pops num_workers from its argument

    setattr(keep_config, _MARK, True)
    expert_module.load_dataset = keep_config


def install(expert_module=None):
    """Make ``-d ctc`` runnable; idempotent. Call with ``s3prl.downstream.ctc.expert`` once imported."""
    _register_corpus()
    if expert_module is None:
        expert_module = sys.modules.get("s3prl.downstream.ctc.expert")
    if expert_module is not None:
        _keep_num_workers(expert_module)
