"""torch.hub entries: ``torch.hub.load(REPO_OR_PATH, "speechft_hubert", ckpt=PATH)``.

The same callables as ``s3prl.hub.speechft_*`` (they live in ``speechft_upstream.hubconf``), plus
every name made with ``speechft register``, looked up when asked for. Kept thin: torch.hub
imports this file with the repository on ``sys.path``.
"""

dependencies = ["torch", "torchaudio", "s3prl", "soundfile", "yaml"]

from speechft_upstream.hubconf import (  # noqa: E402  (torch.hub reads `dependencies` first)
    speechft_decoar2,
    speechft_hubert,
    speechft_wav2vec2,
    speechft_wavlm,
)


def _registered():
    from speechft_upstream.upstream import registry

    try:
        return registry.read()
    except Exception:  # noqa: BLE001 - a broken registry must not hide the built-in entries
        return {}


def __getattr__(name):
    entries = _registered()
    if name in entries:
        from speechft_upstream.upstream import registry

        return registry._make_entry(name, entries[name]["path"], entries[name]["family"])
    raise AttributeError(f"module 'hubconf' has no attribute {name!r}")


def __dir__():
    # torch.hub.load and torch.hub.list look entries up through dir()
    return sorted(set(globals()) | set(_registered()))
