"""The paper's fine-tuning baselines, switched on from the runner's -g settings.

    l2: {lambda: 0.01}                 # weight-space regularisation toward θ0
    lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}

Both live in the upstream, like stable fine-tuning, so the stock runner with -f trains them and
its checkpoints stay θ′ in stock keys (``speechft extract`` and ``speechft merge`` read them).
Early checkpoints need no code: the runner's ``states-<step>.ckpt`` are θ′ at those steps.
"""

import torch

from speechft_upstream.errors import SpeechFTError

LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]}
# Adapter tensors travel in runner checkpoints under this prefix, outside the ``model.`` keys, so
# readers that take ``model.*`` as the encoder see plain dense weights.
LORA_PREFIX = "speechft_lora."


def read_l2(settings, source):
    section = settings.get("l2")
    if section is None:
        return None
    lam = section.get("lambda") if isinstance(section, dict) else None
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or lam < 0:
        raise SpeechFTError(f"{source}: l2 must be a mapping with lambda >= 0, e.g. 'l2: {{lambda: 0.01}}', got {section!r}")
    return float(lam)


def read_lora(settings, source):
    section = settings.get("lora")
    if section is None:
        return None
    if not isinstance(section, dict):
        raise SpeechFTError(f"{source}: lora must be a mapping, e.g. 'lora: {{r: 8}}', got {section!r}")
    unknown = set(section) - set(LORA_DEFAULTS)
    if unknown:
        raise SpeechFTError(f"{source}: unknown lora option(s) {sorted(unknown)}; known: {sorted(LORA_DEFAULTS)}")
    cfg = {**LORA_DEFAULTS, **section}
    if not isinstance(cfg["r"], int) or cfg["r"] <= 0:
        raise SpeechFTError(f"{source}: lora r must be a positive integer, got {cfg['r']!r}")
    if not 0 <= float(cfg["dropout"]) < 1:
        raise SpeechFTError(f"{source}: lora dropout must be in [0, 1), got {cfg['dropout']!r}")
    return cfg


class L2TowardBase:
    """Adds λ(θ − θ0) to each encoder gradient: the gradient of (λ/2)·‖θ − θ0‖².

    s3prl's runner owns the loss, so the penalty enters through gradient hooks; they run before
    DDP averages gradients, and θ, θ0 are the same on every rank, so the result is identical.
    The runner divides the loss by its accumulation steps, so the penalty is divided too.
    """

    def __init__(self, model, lam):
        self.lam = lam
        self.accumulate = 1
        self.anchors = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                # A plain attribute, not a buffer: checkpoints keep stock keys.
                self.anchors[name] = param.detach().clone()
                param.register_hook(self._hook(name, param))

    def _hook(self, name, param):
        def add_penalty(grad):
            anchor = self.anchors[name]
            if anchor.device != param.device:
                anchor = self.anchors[name] = anchor.to(param.device)
            return grad + (self.lam / self.accumulate) * (param.detach() - anchor)

        return add_penalty


class LoRA:
    """peft LoRA adapters on the encoder; everything else frozen; dense weights on save."""

    def __init__(self, model, cfg):
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.lora import LoraLayer

        model.requires_grad_(False)
        config = LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=float(cfg["dropout"]),
                            target_modules=list(cfg["target_modules"]))
        try:
            inject_adapter_in_model(config, model)
        except ValueError as err:
            raise SpeechFTError(f"lora: {err}") from None
        self.layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
        for name, module in model.named_modules():
            # fairseq-style attention hands q/k/v/out_proj.weight straight to torch's fused
            # kernel, which would bypass the adapters; this flag makes it call the modules.
            if hasattr(module, "skip_embed_dim_check") and any(
                    n.startswith(name + ".") for n in self.layers):
                module.skip_embed_dim_check = True

    def dense_state(self, state, prefix):
        """Replace each adapted layer's entries by its merged dense weight under the stock key."""
        for name, layer in self.layers.items():
            base = f"{prefix}{name}."
            for key in [k for k in state if k.startswith(base + "lora_")]:
                state[LORA_PREFIX + key[len(prefix):]] = state.pop(key)
            weight = state.pop(base + "base_layer.weight")
            with torch.no_grad():
                state[base + "weight"] = weight + layer.get_delta_weight("default").to(weight.dtype)
            if base + "base_layer.bias" in state:
                state[base + "bias"] = state.pop(base + "base_layer.bias")
        return state

    def adapter_state(self, state, prefix, current):
        """The inverse, for resuming: adapters come back exactly, base layers keep θ0.

        ``current`` is the module's own raw state (peft's keys); the merged dense weights in
        ``state`` are not loaded, because the frozen base layers already hold θ0.
        """
        out = {}
        for name in self.layers:
            base = f"{prefix}{name}."
            state = {k: v for k, v in state.items() if k not in (base + "weight", base + "bias")}
            for key in current:
                if key.startswith(base + "base_layer."):
                    out[key] = current[key]
        for key, value in state.items():
            if key.startswith(LORA_PREFIX):
                out[prefix + key[len(LORA_PREFIX):]] = value
            else:
                out[key] = value
        return out
