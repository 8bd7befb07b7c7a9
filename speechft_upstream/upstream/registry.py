"""Named checkpoints as extra s3prl upstream names (``-u NAME`` with no ``-k``).

The registry is one JSON file per user: ``$SPEECHFT_REGISTRY``, else
``$XDG_CONFIG_HOME/speechft/registry.json`` (``~/.config/...``). It maps a name to an absolute
checkpoint path and the family read from the file. It is rewritten atomically.
"""

import json
import keyword
import os
import sys
from pathlib import Path

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError


def registry_path():
    if os.environ.get("SPEECHFT_REGISTRY"):
        return Path(os.environ["SPEECHFT_REGISTRY"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "speechft" / "registry.json"


def read():
    path = registry_path()
    if not path.exists():
        return {}
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SpeechFTError(f"{path}: unreadable speechft registry ({err})") from None
    if not isinstance(entries, dict):
        raise SpeechFTError(f"{path}: unreadable speechft registry (not a JSON object)")
    return entries


def _write(entries):
    files.write_json_atomic(entries, registry_path(), indent=2, sort_keys=True)


_stock_names = None  # s3prl's own hub names, captured before speechft adds any


def _taken_names():
    """Names a registered name must not shadow: s3prl's own and speechft's entries."""
    import logging

    # s3prl warns about optional toolkits (ESPnet, ...) on hub import: noise for this command
    quiet = logging.getLogger("s3prl")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import s3prl.hub as hub
    finally:
        quiet.setLevel(level)

    from speechft_upstream.hubconf import ENTRIES

    stock = _stock_names if _stock_names is not None else set(vars(hub)) - set(ENTRIES)
    return set(stock) | set(ENTRIES)


def add(name, ckpt, force=False):
    if not name.isidentifier() or keyword.iskeyword(name):
        raise SpeechFTError(f"{name!r}: not a valid upstream name (use letters, digits and _)")
    if name in _taken_names():
        raise SpeechFTError(f"{name!r}: already an s3prl or speechft upstream name; choose another")
    ckpt = Path(ckpt).resolve()
    _, family = files.read_encoder(ckpt)
    entries = read()
    if name in entries and not force:
        raise SpeechFTError(f"{name!r}: already registered for {entries[name]['path']} (use --force to replace)")
    entries[name] = {"path": str(ckpt), "family": family}
    _write(entries)
    return entries[name]


def remove(name):
    entries = read()
    if name not in entries:
        raise SpeechFTError(f"{name!r}: not in the registry {registry_path()}")
    del entries[name]
    _write(entries)


def _make_entry(name, path, family):
    from speechft_upstream.upstream import expert

    def entry(ckpt=None, model_config=None, refresh=False, **kwargs):
        chosen = ckpt or path
        if not ckpt and not Path(path).exists():
            raise SpeechFTError(f"{path}: registered as upstream {name!r} but the file is gone")
        return expert.build(family, chosen, model_config, **kwargs)

    entry.__name__ = name
    entry.__doc__ = f"{family} checkpoint {path} (speechft registry)"
    return entry


def register_all(hub):
    """Add every registered name to ``s3prl.hub``; a broken registry warns, never breaks s3prl."""
    global _stock_names
    from speechft_upstream.hubconf import ENTRIES

    _stock_names = frozenset(vars(hub)) - set(ENTRIES)
    try:
        entries = read()
    except SpeechFTError as err:
        print(f"speechft: warning: {err}; registered upstream names are unavailable", file=sys.stderr)
        return
    for name, info in entries.items():
        if name in _stock_names or name in ENTRIES:
            print(f"speechft: warning: registered name {name!r} shadows an s3prl upstream; skipped", file=sys.stderr)
            continue
        setattr(hub, name, _make_entry(name, info["path"], info["family"]))
