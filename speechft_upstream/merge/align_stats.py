"""Activation statistics for alignment and REPAIR: the encoders run stage by stage on audio.

A stage is the CNN-to-encoder-input part ("prelude") or one transformer layer. Every stage runs
over all audio pieces before the next starts, keeping each piece's stage output (the next
stage's input), so only one stage's weights and statistics are in memory at a time, and each
stage's pages are handed back to the file (``Source.release``) once it is done.

Each audio file (cut into pieces of at most ``PIECE_SECONDS``) runs alone, batch size 1: no
padding frame exists, so none can enter a statistic. (Padded batches would also change the
function: conv 0's GroupNorm normalises over time, padding included.) Sums are float64.

Attention features are read before out_proj: s3prl's attention calls
F.multi_head_attention_forward, which no module hook sees inside, so softmax(QKᵀ/√d)V is computed
here from the layer's own q/k/v projections, with the layer input a forward hook captures.
"""

import math

import torch

from speechft_upstream.errors import SpeechFTError

PIECE_SECONDS = 10.0
SAMPLE_RATE = 16000
EPS = 1e-8  # variance floor for units that never vary on the audio
# The first conv blocks run at up to 3200 frames/s, whose neighbouring frames are nearly equal:
# their statistics read every k-th frame, at about this rate (most of the work otherwise).
CNN_RATE = 400


def build_model(state, family, weights=None, dtype=torch.float32):
    """s3prl's own model class for a converted checkpoint, its parameters *being* ``weights``.

    Built on the meta device and assigned the given tensors, so no second copy of the weights
    (nor a random initialisation) is ever made; file-backed tensors stay file-backed.
    """
    from s3prl.upstream.utils import merge_with_parent

    weights = state["model_weight" if family in ("hubert", "wav2vec2") else "model"] if weights is None else weights
    # WavLM's initialiser copies through the CPU, which meta tensors cannot: it is built for real
    with torch.device("cpu" if family == "wavlm" else "meta"):
        if family == "hubert":
            from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig

            model = HubertModel(merge_with_parent(HubertConfig, state["model_cfg"]),
                                merge_with_parent(HubertPretrainingConfig, state["task_cfg"]),
                                state["dictionaries_symbols"])
        elif family == "wav2vec2":
            from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

            model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, state["model_cfg"]))
        elif family == "wavlm":
            from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

            model = WavLM(WavLMConfig(state["cfg"]))
        else:
            raise SpeechFTError(f"alignment does not support {family} checkpoints")
    if dtype != torch.float32:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


def settings(state, family):
    cfg = state["cfg"] if family == "wavlm" else state["model_cfg"]
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    return {"heads": int(get("encoder_attention_heads", 12)), "pos_groups": int(get("conv_pos_groups", 16)),
            "mode": get("extractor_mode", "default")}


def pieces(folder, max_seconds=None):
    """[(label, (1, S) float32 tensor)]: the audio under ``folder``, cut into ≤ PIECE_SECONDS pieces."""
    import numpy as np
    import soundfile

    from speechft_upstream.evaluate.analyze import audio_files

    out, budget = [], None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    for path in audio_files(folder):
        wav, _ = soundfile.read(str(path), dtype="float32", always_2d=False)
        if budget is not None:
            wav, budget = wav[:budget], budget - min(budget, len(wav))
        if len(wav) < 400:  # shorter than one frame's receptive field
            continue
        n = math.ceil(len(wav) / (PIECE_SECONDS * SAMPLE_RATE))
        for i, part in enumerate(np.array_split(wav, n)):
            out.append((f"{path}" + (f" (piece {i + 1})" if n > 1 else ""),
                        torch.from_numpy(np.ascontiguousarray(part)).unsqueeze(0)))
        if budget == 0:
            break
    if not out:
        raise SpeechFTError(f"{folder}: no audio long enough to run the encoder on")
    return out


class Stages:
    """One model run stage by stage; ``run(stage, x)`` returns (output, {point: features})."""

    def __init__(self, model, family):
        self.model, self.family = model, family
        self.n_layers = len(model.encoder.layers)
        self.names = ["prelude"] + [f"layer.{l}" for l in range(self.n_layers)]

    def _capture(self, stage, points, got):
        hooks = []
        if stage == "prelude":
            stride = 1
            for i, block in enumerate(self.model.feature_extractor.conv_layers):
                stride *= block[0].stride[0]
                k = max(1, SAMPLE_RATE // stride // CNN_RATE)
                if f"cnn.{i}" in points:
                    hooks.append(block.register_forward_hook(
                        lambda m, a, out, i=i, k=k: got.__setitem__(f"cnn.{i}", out[0, :, ::k].T.clone())))
                if f"cnnnorm.{i}" in points and len(block) == 4:  # conv, dropout, norm, GELU
                    hooks.append(block[2].register_forward_hook(
                        lambda m, a, out, i=i: got.__setitem__(f"cnnnorm.{i}", out[0].T)))
            return hooks
        l = int(stage.split(".")[1])
        layer = self.model.encoder.layers[l]
        if f"ffn.{l}" in points:
            hooks.append(layer.fc2.register_forward_pre_hook(lambda m, a: got.__setitem__(f"ffn.{l}", a[0][:, 0])))
        if f"ffnpre.{l}" in points:
            hooks.append(layer.fc1.register_forward_hook(lambda m, a, out: got.__setitem__(f"ffnpre.{l}", out[:, 0])))
        if f"attn.{l}" in points:
            hooks.append(layer.self_attn.register_forward_hook(
                lambda m, a, kw, out: got.__setitem__(f"attn.{l}", _attention(m, kw.get("query", a[0] if a else None))),
                with_kwargs=True))
        return hooks

    def run(self, stage, x, points=()):
        got = {}
        hooks = self._capture(stage, set(points), got)
        try:
            with torch.no_grad():
                out = self._prelude(x) if stage == "prelude" else self._layer(int(stage.split(".")[1]), x)
        finally:
            for hook in hooks:
                hook.remove()
        if f"resid.{stage}" in points:
            got[f"resid.{stage}"] = out[:, 0]
        return out, got

    def _prelude(self, wav):
        m = self.model
        features = m.feature_extractor(wav.to(next(m.parameters()).dtype)).transpose(1, 2)
        features = m.layer_norm(features)
        if m.post_extract_proj is not None:
            features = m.post_extract_proj(features)
        enc = m.encoder
        x = features + enc.pos_conv(features.transpose(1, 2)).transpose(1, 2)
        if not enc.layer_norm_first:
            x = enc.layer_norm(x)
        return x.transpose(0, 1)  # T x B x D, as the layers take it

    def _layer(self, l, x):
        layer = self.model.encoder.layers[l]
        if self.family == "wavlm":
            attn = self.model.encoder.layers[0].self_attn
            bias = attn.compute_bias(x.shape[0], x.shape[0]) if attn.has_relative_attention_bias else None
            if bias is not None:  # as layer 0 builds it and hands it on (wavlm/modules.py:511)
                bias = bias.unsqueeze(0).view(attn.num_heads, x.shape[0], x.shape[0])
            return layer(x, self_attn_padding_mask=None, need_weights=False, pos_bias=bias)[0]
        return layer(x, self_attn_padding_mask=None, need_weights=False)[0]

    def final(self, x):
        """The encoder's last hidden state from the last layer's output."""
        enc = self.model.encoder
        return enc.layer_norm(x) if enc.layer_norm_first else x


def _attention(attn, query):
    """q, k and the per-head attention output before out_proj, each (T, D), for batch size 1."""
    t, h = query.shape[0], attn.num_heads
    d = query.shape[2] // h
    q, k, v = attn.q_proj(query[:, 0]), attn.k_proj(query[:, 0]), attn.v_proj(query[:, 0])
    heads = lambda z: z.view(t, h, d).transpose(0, 1)  # noqa: E731
    weights = torch.softmax(heads(q) @ heads(k).transpose(1, 2) * d ** -0.5, dim=-1)
    out = (weights @ heads(v)).transpose(0, 1).reshape(t, h * d)
    return {"q": q, "k": k, "o": out}


def hidden_states(model, family, wav):
    """[prelude output, layer outputs...] as (T, D): what s3prl's expert returns as hidden_states."""
    stages = Stages(model, family)
    x, _ = stages.run("prelude", wav)
    states = [x[:, 0]]
    for l in range(stages.n_layers):
        x, _ = stages.run(f"layer.{l}", x)
        states.append(x[:, 0])
    states[-1] = stages.final(x)[:, 0]
    return states


class CrossCorrelation:
    """Streamed float64 moments of two unit sets, for their correlation matrix."""

    SLICE = 8192  # frames converted to float64 at a time

    def __init__(self, n_a, n_b=None):
        n_b = n_a if n_b is None else n_b
        self.count = 0
        self.sa, self.saa = torch.zeros(n_a, dtype=torch.float64), torch.zeros(n_a, dtype=torch.float64)
        self.sb, self.sbb = torch.zeros(n_b, dtype=torch.float64), torch.zeros(n_b, dtype=torch.float64)
        self.sab = torch.zeros(n_a, n_b, dtype=torch.float64)

    def update(self, a, b):
        for start in range(0, a.shape[0], self.SLICE):
            x, y = a[start:start + self.SLICE].double(), b[start:start + self.SLICE].double()
            self.count += x.shape[0]
            self.sa += x.sum(0)
            self.sb += y.sum(0)
            self.saa += (x * x).sum(0)
            self.sbb += (y * y).sum(0)
            self.sab.addmm_(x.T, y)

    def correlation(self):
        """(n_a × n_b correlation, indices of A's and B's units whose variance is ~0).

        Computed in place in the cross-moment matrix (for HuBERT Base's FFN one such matrix is
        75 MB, and the textbook expression makes four): the accumulator is spent afterwards.
        """
        n = self.count
        ma, mb = self.sa / n, self.sb / n
        va, vb = (self.saa / n - ma * ma).clamp_min(0), (self.sbb / n - mb * mb).clamp_min(0)
        # relative floor: a unit is "constant" when its variance is tiny next to its scale
        dead_a = (va <= EPS * (1 + ma * ma)).nonzero().flatten().tolist()
        dead_b = (vb <= EPS * (1 + mb * mb)).nonzero().flatten().tolist()
        corr = self.sab.div_(n).addr_(ma, mb, alpha=-1)  # the covariance
        corr.div_((va + EPS).sqrt().unsqueeze(1)).div_((vb + EPS).sqrt().unsqueeze(0))
        self.sab = None
        return corr, dead_a, dead_b


class Moments:
    """Streamed float64 per-unit mean and standard deviation."""

    def __init__(self, n):
        self.count, self.s, self.ss = 0, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    def update(self, a):
        a = a.double()
        self.count += a.shape[0]
        self.s += a.sum(0)
        self.ss += (a * a).sum(0)

    def result(self):
        mean = self.s / self.count
        return mean, (self.ss / self.count - mean * mean).clamp_min(0).sqrt()


def trim_heap():
    """Hand freed heap memory back to the system (glibc): after a stage's large temporaries,
    glibc's raised mmap threshold otherwise keeps them counted in RSS for the rest of the run."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
        if trim is not None:
            trim(0)


def check_finite(features, where, label):
    for name, value in (features.items() if isinstance(features, dict) else [("", features)]):
        if not torch.isfinite(value).all():
            raise SpeechFTError(f"{where}: activations at {label} are NaN or Inf; alignment needs finite "
                                "activations (check the checkpoint and the audio)")
