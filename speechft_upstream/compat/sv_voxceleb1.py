"""s3prl 0.4.18's ``sv_voxceleb1`` downstream (SUPERB ASV) on a CPU machine with current libraries.

What breaks there, and what ``install_*`` below changes (each only where it is still needed):

- ``dataset.py`` imports ``from sox import Transformer`` (never used); the ``sox`` package is not
  a dependency of s3prl. ``install_package`` supplies a stand-in when ``sox`` is not importable.
- ``SpeakerVerifi_train`` measures every training wav after s3prl's sox effects with
  ``joblib.Parallel(n_jobs=12)`` (12 processes on any machine) and caches the lengths in
  ``.wav_lengths/Voxceleb1_length.pt`` *inside the installed package*, keyed by the constant
  ``"Voxceleb1"``: a second data set silently gets the first one's files and lengths.
  ``install_dataset`` replaces its ``__init__`` with one that keys the cache by the folder and
  every audio file's path, size and mtime (JSON, written atomically, under ``CACHE_DIR``), and
  uses at most the CPUs this process may run on (one for small folders).
- ``DownstreamExpert.forward`` moves the attention mask with ``.cuda()``, so ``--device cpu``
  dies; and ``log_records`` scores the *test* trial list for the dev split as well (a KeyError
  on any dev list of other files). ``install_expert`` fixes both.
"""

import functools
import hashlib
import logging
import os
import sys
import types
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

log = logging.getLogger("speechft.compat")

CACHE_DIR = None  # None: $S3PRL_SV_CACHE_DIR, else s3prl's own <sv_voxceleb1>/.wav_lengths; recipes: EXP/cache
_MARK = "_speechft"
LAYOUT = "ASV data: see downstream_recipes/README.md"


def install_package(package=None):
    """``sox`` for ``from sox import Transformer`` when pysox is not installed (s3prl never calls it)."""
    import importlib.util

    if "sox" in sys.modules or importlib.util.find_spec("sox") is not None:
        return
    sox = types.ModuleType("sox", "speechft stand-in: s3prl's sv_voxceleb1 imports sox.Transformer, never uses it")

    class Transformer:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("the pysox package is not installed (speechft only stands in for its import)")

    sox.Transformer = Transformer
    sys.modules["sox"] = sox


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cache_key(root, paths):
    """The folder and every file's relative path, size and mtime: an edited data set gets a new key."""
    digest = hashlib.sha256(os.path.abspath(root).encode())
    for path in paths:
        st = os.stat(path)
        digest.update(f"\n{os.path.relpath(path, root)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def trimmed_lengths(module, root, n_jobs=12):
    """(paths, lengths after s3prl's EFFECTS) for every audio file under root, cached."""
    from speechft_upstream.checkpoints import files

    root = Path(root)
    if not root.is_dir():
        raise SpeechFTError(f"{root}: no such folder ({LAYOUT})")
    paths = [Path(p) for p in module.find_files(str(root))]
    if not paths:
        raise SpeechFTError(f"{root}: no audio files ({LAYOUT})")
    # the recipe's folder, else the patched source's variable (patches/s3prl/0006), else s3prl's place
    base = Path(CACHE_DIR or os.environ.get("S3PRL_SV_CACHE_DIR") or Path(module.__file__).parent / ".wav_lengths")
    cache = base / f"{cache_key(root, paths)}.json"
    if cache.is_file():
        import json

        return paths, json.loads(cache.read_text())["lengths"]

    def length(path):
        wav, _ = module.apply_effects_file(str(path), module.EFFECTS)
        return int(wav.shape[-1])

    jobs = max(1, min(int(n_jobs or 1), available_cpus(), len(paths) // 200))
    items = module.tqdm.tqdm(paths, desc=f"Measuring {root} ({jobs} process(es))")
    if jobs == 1:
        lengths = [length(p) for p in items]
    else:
        lengths = module.Parallel(n_jobs=jobs)(module.delayed(length)(p) for p in items)
    base.mkdir(parents=True, exist_ok=True)
    files.write_json_atomic({"root": str(root.resolve()), "files": [str(p.relative_to(root)) for p in paths],
                             "lengths": lengths}, cache)
    return paths, lengths


def install_dataset(module):
    cls = module.SpeakerVerifi_train
    if getattr(cls.__init__, _MARK, False):
        return

    def __init__(self, vad_config, key_list, file_path, meta_data, max_timestep=None, n_jobs=12):
        # the attributes s3prl's own __init__ sets (meta_data is unused there too)
        self.roots, self.root_key, self.max_timestep, self.vad_c = file_path, key_list, max_timestep, vad_config
        self.dataset, self.all_speakers = [], []
        for root in self.roots:
            paths, lengths = trimmed_lengths(module, root, n_jobs)
            self.all_speakers.extend(f.stem for f in Path(root).iterdir() if f.is_dir())
            self.dataset += [p for p, n in zip(paths, lengths) if n > self.vad_c["min_sec"]]
        if not self.dataset:
            raise SpeechFTError(f"{', '.join(map(str, self.roots))}: no training utterance is longer than "
                             f"vad_config.min_sec = {self.vad_c['min_sec']} samples after trimming")
        self.all_speakers.sort()
        self.speaker_num = len(self.all_speakers)

    __init__.__doc__ = "speechft: s3prl's SpeakerVerifi_train.__init__ with a keyed cache and capped n_jobs"
    setattr(__init__, _MARK, True)
    cls.__init__ = __init__


def install_expert(module):
    cls = module.DownstreamExpert
    if getattr(cls.forward, _MARK, False):
        return
    log_records = cls.log_records
    import torch
    from torch.nn.utils.rnn import pad_sequence

    def forward(self, mode, features, utter_idx, labels=None, records=None, **kwargs):
        # s3prl's forward, with the attention mask on the features' device instead of .cuda()
        trim = 14 if self.modelrc["module"] == "XVector" else 0  # the x-vector TDNN context
        features_pad = self.connector(pad_sequence(features, batch_first=True))
        mask = pad_sequence([torch.ones(f.shape[0] - trim) for f in features], batch_first=True)
        mask = ((1.0 - mask) * -100000.0).to(features_pad.device)
        if mode == "train":
            labels = torch.LongTensor(labels).to(features_pad.device)
            loss = self.objective(self.model(features_pad, mask), labels)
            records["loss"].append(loss.item())
            return loss
        agg_vec = torch.nn.functional.normalize(self.model.inference(features_pad, mask), dim=-1)
        for name, vec in zip(utter_idx, agg_vec):
            records[name] = vec.cpu().detach()
        return torch.tensor(0)

    @functools.wraps(log_records)
    def scored_on_own_trials(self, mode, records, *args, **kwargs):
        if mode != "dev":
            return log_records(self, mode, records, *args, **kwargs)
        test = self.test_dataset  # s3prl reads the trial list from test_dataset for every split
        self.test_dataset = self.dev_dataset
        try:
            return log_records(self, mode, records, *args, **kwargs)
        finally:
            self.test_dataset = test

    setattr(forward, _MARK, True)
    cls.forward = forward
    cls.log_records = scored_on_own_trials
