"""The speechft upstream: s3prl's own expert for the family, loaded from a checked file.

Subclassing the stock expert keeps the model code, the hidden-state hooks and the state_dict
keys (``model.<param>``) exactly s3prl's, so features equal ``<family>_local`` bit for bit and
runner checkpoints stay interchangeable. What speechft adds is checked input (safe load,
family, finite weights) before s3prl touches the file, and the plugin settings from ``-g``.
"""

import importlib
from functools import lru_cache
from pathlib import Path

from speechft_upstream import checkpoint
from speechft_upstream.errors import SpeechFTError

STOCK_EXPERTS = {
    "hubert": "s3prl.upstream.hubert.expert",
    "wav2vec2": "s3prl.upstream.wav2vec2.expert",
    "wavlm": "s3prl.upstream.wavlm.expert",
    "decoar2": "s3prl.upstream.decoar2.expert",
}


def read_settings(model_config):
    """Plugin settings from the runner's -g file (a YAML mapping); {} when none is given."""
    if model_config is None or model_config == "":
        return {}
    path = Path(model_config)
    if not path.is_file():
        raise SpeechFTError(f"{path}: upstream config (-g) not found")
    import yaml

    try:
        settings = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpeechFTError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(settings, dict):
        raise SpeechFTError(f"{path}: upstream config must be a YAML mapping, got {type(settings).__name__}")
    return settings


@lru_cache(maxsize=None)
def expert_class(family):
    stock = importlib.import_module(STOCK_EXPERTS[family]).UpstreamExpert

    class Expert(stock):
        def __init__(self, ckpt, settings=None, **kwargs):
            super().__init__(str(ckpt), **kwargs)
            self.speechft_family = family
            self.speechft_settings = dict(settings or {})

    Expert.__name__ = Expert.__qualname__ = f"SpeechFT{family.capitalize()}Expert"
    return Expert


def build(family, ckpt, model_config=None, **kwargs):
    """Check ``ckpt`` is a sound converted ``family`` checkpoint, then build the expert on it."""
    checkpoint.read_encoder(ckpt, expect=family)
    settings = read_settings(model_config)
    return expert_class(family)(ckpt, settings=settings, **kwargs)
