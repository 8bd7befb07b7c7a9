"""s3prl's converted checkpoint formats: safe reading, family detection, atomic writing.

The only module that reads or writes checkpoint files. Everything is loaded with
``weights_only=True`` and an explicit allow-list, so a file carrying a pickle payload is refused
before anything in it runs.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

# Top-level keys of each family's converted format (s3prl 0.4.18 upstream/<family>/convert.py).
FORMATS = {
    "hubert": ("task_cfg", "model_cfg", "model_weight", "dictionaries_symbols"),
    "wav2vec2": ("task_cfg", "model_cfg", "model_weight"),
    "wavlm": ("cfg", "model"),
    "decoar2": ("model",),
}
FAMILIES = tuple(FORMATS)

# What a runner checkpoint pickles besides tensors and builtins.
RUNNER_ALLOWED = (argparse.Namespace,)


def _check_readable(path):
    path = Path(path)
    if not path.exists():
        raise SpeechFTError(f"{path}: no such file")
    if path.is_dir():
        raise SpeechFTError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise SpeechFTError(f"{path}: empty file")
    return path


def _check_container(path):
    """Tell a foreign or truncated file apart before torch's unpickler sees it."""
    import zipfile

    with open(path, "rb") as handle:
        head = handle.read(2)
    if head == b"PK":
        if not zipfile.is_zipfile(path):
            raise SpeechFTError(f"{path}: truncated or corrupt PyTorch checkpoint (incomplete zip archive)")
    elif head[:1] != b"\x80":  # torch's legacy format is a bare pickle stream
        raise SpeechFTError(f"{path}: not a PyTorch checkpoint (unrecognised file contents)")


def load(path, allowed=(), mmap=True):
    """torch.load with weights_only=True; every failure becomes one SpeechFTError line."""
    import pickle

    import torch

    path = _check_readable(path)
    _check_container(path)
    # safe_globals() removes its entries on exit: pass only the ones not already allowed
    # globally, or a load would take argparse.Namespace off the list s3prl's runner relies on.
    extra = [g for g in allowed if g not in torch.serialization.get_safe_globals()]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "GLOBAL" not in text and "global" not in text:
            raise SpeechFTError(f"{path}: not a PyTorch checkpoint ({_first_line(err)})") from None
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln), "")
        raise SpeechFTError(
            f"{path}: refused to unpickle it: it holds objects that are not plain weights "
            f"({detail}); only files you trust should be loaded otherwise"
        ) from None
    except RuntimeError as err:
        if mmap and "mmap" in str(err):
            return load(path, allowed, mmap=False)  # legacy (non-zip) files can't be mapped
        raise SpeechFTError(f"{path}: truncated or corrupt PyTorch checkpoint ({_first_line(err)})") from None
    except Exception as err:  # torch's readers raise anything from EOFError to KeyError on bad bytes
        raise SpeechFTError(f"{path}: truncated or corrupt PyTorch checkpoint ({type(err).__name__}: {_first_line(err)})") from None


def _first_line(err):
    text = str(err).strip()
    # torch's messages run on for several sentences; the first says what went wrong.
    return text.splitlines()[0].split(". ")[0].rstrip(".") if text else type(err).__name__


def detect_family(state, path="checkpoint"):
    """The family whose converted format the loaded dict has, or a SpeechFTError."""
    if not isinstance(state, dict):
        raise SpeechFTError(f"{path}: not an s3prl converted checkpoint (top level is {type(state).__name__}, not a dict)")
    keys = set(state)
    if "model" in keys and keys & {"args", "optimizer_history", "task_state"}:
        raise SpeechFTError(
            f"{path}: looks like an original fairseq checkpoint; convert it to s3prl's format first"
        )
    for family, required in FORMATS.items():
        if keys.issuperset(required) and not (family == "wav2vec2" and "dictionaries_symbols" in keys) \
                and not (family == "decoar2" and keys & {"cfg", "model_weight"}):
            return family
    if {"Upstream", "Downstream", "Args"} <= keys:
        raise SpeechFTError(
            f"{path}: is an s3prl runner checkpoint, not an encoder; "
            "take the encoder out with `speechft extract` first"
        )
    raise SpeechFTError(
        f"{path}: not an s3prl converted checkpoint of a known family "
        f"(top-level keys: {', '.join(sorted(map(str, keys))[:8])})"
    )


def weights(state, family):
    """The parameter dict inside a converted checkpoint."""
    return state["model_weight"] if family in ("hubert", "wav2vec2") else state["model"]


def read_encoder(path, expect=None):
    """Load a converted encoder checkpoint, check its family and that its weights are finite."""
    import torch

    state = load(path)
    family = detect_family(state, path)
    if expect is not None and family != expect:
        raise SpeechFTError(f"{path}: is a {family} checkpoint, but a {expect} checkpoint is needed")
    params = weights(state, family)
    if not isinstance(params, dict) or not params:
        raise SpeechFTError(f"{path}: holds no weights under its {family} weight key")
    for name, value in params.items():
        if not isinstance(value, torch.Tensor):
            raise SpeechFTError(f"{path}: weight {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise SpeechFTError(f"{path}: weight {name!r} holds NaN or Inf values")
    return state, family


def _write_atomic(path, write, mode="wb"):
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename."""
    import torch

    return _write_atomic(path, lambda handle: torch.save(obj, handle))


def write_json_atomic(obj, path, **dump_options):
    """A JSON file (sidecars, logs, the registry) written the same all-or-nothing way."""
    return _write_atomic(path, lambda handle: handle.write(json.dumps(obj, **dump_options) + "\n"), mode="w")


def write_text_atomic(text, path):
    """A text file (bucket lists, a merge's config.yaml) written the same all-or-nothing way."""
    return _write_atomic(path, lambda handle: handle.write(text), mode="w")
