"""RegMean's statistics: the Gram matrix of every linear layer's inputs, gathered on audio.

For each θ′_i in turn the model runs on every file of ``--audio DIR`` (one file at a time, so
no frame is padding), and for each linear layer with inputs X (frames × in), in float64:

  S  += XᵀX                           (one sum over all models: Σ_i G_i)
  C  += a·Xᵀ(X·W_iᵀ)                  (per weight: a·Σ_i G_i·W_iᵀ, never holding G_i itself)
  d_i += diag(XᵀX)                    (per model, a vector)

and after model i, C += (1 − a)·diag(d_i)·W_iᵀ. At the end S becomes a·S + (1 − a)·diag(S). Since
off-diagonal scaling is linear, that gives exactly Σ_i G̃_i and Σ_i G̃_i·W_iᵀ of RegMean's solve
(methods_regmean), with memory that does not grow with the audio or the number of models:
one in×in Gram per distinct layer input (q, k and v share theirs) and one in×out cross term
per weight, in float64 (HuBERT Base: 1.1 GB + 0.7 GB).

s3prl's attention runs through F.multi_head_attention_forward, so nothing inside it can be
hooked: the attention hook recomputes the input of out_proj, softmax(QKᵀ/√d)·V per head, from
the block's own input, and checks the first batch against the module's real output.
"""

import math
import sys
from pathlib import Path

import torch

from speechft_upstream.errors import SpeechFTError

SAMPLE_RATE = 16000
CHUNK_SECONDS = 15.0  # longer files are cut: attention's T×T scores per head stay small
SUFFIXES = (".wav", ".flac", ".ogg")
FAMILIES = ("hubert", "wav2vec2")


def audio_files(folder, max_seconds=None):
    """The audio under ``folder`` as 16 kHz mono float32 chunks (sorted paths, ≤ 15 s each)."""
    import numpy as np
    import soundfile
    from scipy.signal import resample_poly

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        raise SpeechFTError(f"{folder}: no audio files ({', '.join(SUFFIXES)}) for regmean's Grams")
    budget = math.inf if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    chunks, used = [], 0
    for path in paths:
        try:
            data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        except Exception as err:  # noqa: BLE001 - one line naming the file
            raise SpeechFTError(f"{path}: not readable audio ({str(err).splitlines()[0]})") from None
        wav = data.mean(axis=1)
        if rate != SAMPLE_RATE:
            g = math.gcd(SAMPLE_RATE, rate)
            wav = resample_poly(wav, SAMPLE_RATE // g, rate // g).astype(np.float32)
        step = int(CHUNK_SECONDS * SAMPLE_RATE)
        for start in range(0, len(wav), step):
            piece = wav[start:start + min(step, budget - used)]
            if len(piece) >= 400:  # one CNN frame (25 ms)
                chunks.append((path, torch.from_numpy(np.ascontiguousarray(piece))))
                used += len(piece)
            if used >= budget:
                return chunks
    if not chunks:
        raise SpeechFTError(f"{folder}: audio files are all shorter than 25 ms")
    return chunks


class _Stats:
    """The running sums of the module docstring, keyed by layer input (Grams) and weight (cross)."""

    def __init__(self, scale):
        self.scale = scale
        self.grams, self.cross, self.diag, self.uses, self.keys = {}, {}, {}, {}, {}
        self.frames = {}  # rows seen per layer input (same audio for every model)

    def add(self, key, x, outputs, source):
        """Inputs ``x`` (frames × in, float64) of the weights ``outputs`` {name: (W, Y = x·Wᵀ)}."""
        if not math.isfinite(float(x.sum())):
            raise SpeechFTError(f"{source}: non-finite activations at the input of {next(iter(outputs))}")
        self.frames[key] = self.frames.get(key, 0) + x.shape[0]
        # in place (addmm_): a fresh in×in product per batch would be 75 MB for HuBERT Base's fc2
        if key in self.grams:
            self.grams[key].addmm_(x.T, x)
        else:
            self.grams[key] = x.T @ x
        self.diag[key] = self.diag.get(key, 0) + (x * x).sum(0)
        for name, (weight, y) in outputs.items():
            self.uses[name] = (key, weight)
            self.keys[name] = key
            if name in self.cross:
                self.cross[name].addmm_(x.T, y, alpha=self.scale)
            else:
                self.cross[name] = (x.T @ y).mul_(self.scale)

    def end_model(self):
        """Fold model i's (1 − a)·diag(G_i)·W_iᵀ into the cross terms; forget its diagonals."""
        for name, (key, weight) in self.uses.items():
            self.cross[name] += (1 - self.scale) * self.diag[key][:, None] * weight.detach().double().T
        self.diag, self.uses = {}, {}

    def result(self):
        """{weight name: (Σ G̃_i, Σ G̃_i·W_iᵀ)}; the Grams reduced in place (a·S + (1 − a)·diag S)."""
        for gram in self.grams.values():
            diagonal = gram.diagonal().clone()
            gram.mul_(self.scale)
            gram.diagonal().copy_(diagonal)
        return {name: (self.grams[self.keys[name]], cross) for name, cross in self.cross.items()}


def _attention(module, x, padding):
    """Inputs of out_proj, softmax(Q·Kᵀ/√d)·V per head, for self-attention input x (T × B × C);
    ``padding`` (B × T, True = pad) keys get no attention, as in F.multi_head_attention_forward."""
    t, b, c = x.shape
    h = module.num_heads
    d = c // h
    flat = x.reshape(t * b, c)
    proj = {}
    for part in ("q", "k", "v"):
        lin = getattr(module, f"{part}_proj")
        y = flat @ lin.weight.double().T
        proj[part] = y
        proj[part + "b"] = y + lin.bias.double() if lin.bias is not None else y
    heads = [proj[p + "b"].view(t, b * h, d).transpose(0, 1) for p in "qkv"]
    logits = heads[0] @ heads[1].transpose(1, 2) / math.sqrt(d)
    if padding is not None:
        logits = logits.view(b, h, t, t).masked_fill(padding[:, None, None, :], float("-inf")).view(b * h, t, t)
    scores = torch.softmax(logits, dim=-1)
    out = (scores @ heads[2]).transpose(0, 1).reshape(t * b, c)
    return proj, out


def _rows(x, keep):
    return x if keep is None else x[keep]


def _hooks(model, stats, family, state):
    from speechft_upstream.merge.run import keeps_base

    handles, attention_parts = [], set()
    for name, module in model.named_modules():
        if all(hasattr(module, a) for a in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads")):
            attention_parts.update(f"{name}.{p}" for p in ("q_proj", "k_proj", "v_proj", "out_proj"))

            def attention_hook(module, args, kwargs, output, name=name):
                x = kwargs.get("query", args[0] if args else None).detach().double()
                if kwargs.get("attn_mask") is not None or module.bias_k is not None or module.add_zero_attn:
                    raise SpeechFTError(f"{name}: regmean cannot recompute attention with a mask or extra keys")
                padding = kwargs.get("key_padding_mask")
                padding = padding if padding is not None and bool(padding.any()) else None
                # the encoder pads to a multiple of its required length: those frames are not data
                keep = state["keep"] = None if padding is None else (~padding).T.reshape(-1)
                proj, out = _attention(module, x, padding)
                flat = x.reshape(-1, x.shape[-1])
                stats.add(f"{name}.in", _rows(flat, keep),
                          {f"{name}.{p}_proj.weight": (getattr(module, f"{p}_proj").weight, _rows(proj[p], keep))
                           for p in "qkv"}, state["source"])
                wo = module.out_proj.weight
                if not state["checked"].get(name):
                    real = _rows(output[0].detach().double().reshape(out.shape[0], -1), keep)
                    mine = _rows(out, keep) @ wo.double().T + module.out_proj.bias.double()
                    if not torch.allclose(mine, real, rtol=1e-4, atol=1e-4 * float(real.abs().max())):
                        raise SpeechFTError(f"{name}: recomputed attention differs from the model's own "
                                            "output; regmean cannot gather out_proj's inputs here")
                    state["checked"][name] = True
                out = _rows(out, keep)
                stats.add(f"{name}.out", out, {f"{name}.out_proj.weight": (wo, out @ wo.double().T)}, state["source"])

            handles.append(module.register_forward_hook(attention_hook, with_kwargs=True))
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name not in attention_parts \
                and not keeps_base(f"{name}.weight", family):

            in_layer = ".layers." in f".{name}"

            def linear_hook(module, args, output, name=name, in_layer=in_layer):
                x = args[0].detach().double().reshape(-1, module.in_features)
                if in_layer:  # time-first like the attention that ran before it in this layer
                    x = _rows(x, state["keep"])
                stats.add(name, x, {f"{name}.weight": (module.weight, x @ module.weight.double().T)},
                          state["source"])

            handles.append(module.register_forward_hook(linear_hook))
    return handles


def collect(base, finetuned, audio_dir, scale, max_seconds=None, progress=True):
    """{weight name: (Σ_i G̃_i, Σ_i G̃_i·W_iᵀ)} over the θ′ ``finetuned`` (checkpoints.stream.Source)."""
    if base.family not in FAMILIES:
        raise SpeechFTError(f"{base.path}: regmean supports {', '.join(FAMILIES)} checkpoints, not {base.family} "
                            "(its attention's inputs to out_proj cannot be recomputed here)")
    from tqdm import tqdm

    from speechft_upstream.upstream import expert as expert_module

    chunks = audio_files(audio_dir, max_seconds)
    expert = expert_module.build(base.family, str(base.path))
    expert.eval()
    stats = _Stats(scale)
    state = {"checked": {}, "source": None, "keep": None}
    handles = _hooks(expert.model, stats, base.family, state)
    try:
        with torch.no_grad():
            for i, ft in enumerate(finetuned):
                expert.model.load_state_dict(ft.weights, strict=True)
                for tensor in ft.weights.values():
                    ft.release(tensor)  # the model holds its copy: hand the mapped pages back
                for path, wav in tqdm(chunks, desc=f"regmean Grams {i + 1}/{len(finetuned)}", unit="file",
                                      disable=None if progress else True, file=sys.stderr):
                    state["source"] = f"{ft.path} on {path}"
                    expert([wav])
                state["checked"] = {}
                stats.end_model()
    finally:
        for handle in handles:
            handle.remove()
    frames = min(stats.frames.values(), default=0) // len(finetuned)
    widest = max((g.shape[0] for g in stats.grams.values()), default=0)
    if scale == 1 and frames < widest:
        raise SpeechFTError(f"{audio_dir}: too little audio for regmean with --offdiag-scale 1: {frames} frames "
                            f"for layer inputs of {widest} dimensions (singular Grams); give more audio or a "
                            "scale below 1")
    return stats.result()
