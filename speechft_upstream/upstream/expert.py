"""The speechft upstream: s3prl's own expert for the family, loaded from a checked file.

Subclassing the stock expert keeps the model code, the hidden-state hooks and the state_dict
keys (``model.<param>``) exactly s3prl's, so features equal ``<family>_local`` bit for bit and
runner checkpoints stay interchangeable. What speechft adds is checked input (safe load,
family, finite weights) before s3prl touches the file, and the plugin settings from ``-g``.
"""

import importlib
from functools import lru_cache
from pathlib import Path

import torch

from speechft_upstream.checkpoints import files
from speechft_upstream.finetune import baselines, stable
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
        def __init__(self, ckpt, settings=None, settings_source="-g settings", **kwargs):
            super().__init__(str(ckpt), **kwargs)
            self.speechft_family = family
            self.speechft_settings = dict(settings or {})
            self.speechft_schedule = stable.StableSchedule(stable.read_beta(self.speechft_settings, settings_source))
            total = stable.read_total_steps(self.speechft_settings, settings_source)
            if total is not None:
                self.speechft_schedule.configure(total_steps=total)
            l2 = baselines.read_l2(self.speechft_settings, settings_source)
            lora = baselines.read_lora(self.speechft_settings, settings_source)
            if l2 is not None and lora is not None:
                raise SpeechFTError(f"{settings_source}: choose one baseline, l2 or lora, not both")
            # Every requires_grad change happens now, before s3prl's runner wraps us in DDP.
            self.speechft_lora = baselines.LoRA(self.model, lora) if lora else None
            cnn = stable.cnn_of(self)
            if cnn is not None:
                cnn.requires_grad_(False)
            self.speechft_l2 = baselines.L2TowardBase(self.model, l2) if l2 else None

        def set_step_budget(self, total_steps, accumulate=1, start_step=0):
            """Turn on stable fine-tuning in your own training loop: the encoder stays frozen for
            the first ⌊β·total_steps⌋ optimizer steps (``accumulate`` training forwards each),
            counted from ``start_step`` (the steps already done when resuming). Without a budget
            the upstream trains like the stock expert. s3prl's runner calls this for you."""
            self.speechft_schedule.configure(total_steps=total_steps, accumulate=accumulate, start_step=start_step)
            return self

        def forward(self, wavs):
            # Only training forwards with autograd on count as steps; the runner's eval passes
            # and the featurizer's probe run in eval mode or under no_grad.
            if self.training and torch.is_grad_enabled() and self.speechft_schedule.next_forward_is_head_only():
                with torch.no_grad():
                    return super().forward(wavs)
            return super().forward(wavs)

        def state_dict(self, *args, **kwargs):
            state = super().state_dict(*args, **kwargs)
            if self.speechft_lora is None:
                return state
            prefix = (args[1] if len(args) > 1 else kwargs.get("prefix", "")) + "model."
            return self.speechft_lora.dense_state(state, prefix)

        def load_state_dict(self, state_dict, strict=True, **kwargs):
            if self.speechft_lora is not None:
                current = super().state_dict()
                state_dict = self.speechft_lora.adapter_state(state_dict, "model.", current)
            return super().load_state_dict(state_dict, strict=strict, **kwargs)

    Expert.__name__ = Expert.__qualname__ = f"SpeechFT{family.capitalize()}Expert"
    return Expert


def build(family, ckpt, model_config=None, **kwargs):
    """Check ``ckpt`` is a sound converted ``family`` checkpoint, then build the expert on it."""
    files.read_encoder(ckpt, expect=family)
    settings = read_settings(model_config)
    return expert_class(family)(ckpt, settings=settings, settings_source=str(model_config) if model_config else "-g settings", **kwargs)
