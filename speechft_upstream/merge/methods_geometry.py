"""Merge methods that use the angle between weights: SLERP and Model Stock (pure, no file access)."""

import math

import torch

from speechft_upstream.merge.methods import _compute_dtype, _task_vectors

# Above this |cos| the two tensors are parallel to float precision: sin θ is ~0, so SLERP divides
# by nearly nothing; mergekit's threshold, where it falls back to linear interpolation too.
DOT_THRESHOLD = 0.9995
_EPS = 1e-8


def slerp(base, finetuned, t):
    """Spherical interpolation of one tensor from θ0 (t = 0) to the single θ′ (t = 1).

    Each tensor is one vector (as mergekit does): with θ = arccos(⟨θ0, θ′⟩ / (‖θ0‖·‖θ′‖)),
    θ̂ = sin((1−t)·θ)/sin θ · θ0 + sin(t·θ)/sin θ · θ′ on the unnormalised tensors, so norms
    interpolate too. Nearly parallel (|cos| > 0.9995) or zero tensors take (1−t)·θ0 + t·θ′.
    Fine-tuning moves weights little, so for Speech-FT's θ0/θ′ pairs most tensors are in that
    linear case: SLERP differs from linear mainly for models trained apart.
    Returns the merged tensor (not a τ) in the compute dtype; t = 0 and t = 1 give the ends exactly.
    """
    if len(finetuned) != 1:
        raise ValueError(f"slerp merges two models: θ0 and one θ′, got {len(finetuned)} θ′")
    dtype = _compute_dtype(base)
    v0, v1 = base.to(dtype), finetuned[0].to(dtype)
    if t == 0:
        return v0.clone()
    if t == 1:
        return v1.clone()
    n0, n1 = float(v0.norm()), float(v1.norm())
    if n0 < _EPS or n1 < _EPS:
        return v0 + t * (v1 - v0)
    dot = max(-1.0, min(1.0, float((v0.reshape(-1) @ v1.reshape(-1)).item()) / (n0 * n1)))
    if abs(dot) > DOT_THRESHOLD:
        return v0 + t * (v1 - v0)
    theta = math.acos(dot)
    s0 = math.sin((1 - t) * theta) / math.sin(theta)
    s1 = math.sin(t * theta) / math.sin(theta)
    return v0 * s0 + v1 * s1


def model_stock_ratio(taus):
    """Model Stock's t = k·cosθ / (1 + (k−1)·cosθ), cosθ the mean pairwise cosine of the τ_i.

    A negative mean cosine is taken as 0 (t = 0): the paper's geometry needs the fine-tuned
    models at an acute angle around θ0, and below 0 the formula's denominator can reach 0.
    """
    k = len(taus)
    flat = [t.reshape(-1) for t in taus]
    norms = [float(f.norm()) for f in flat]
    cosines = []
    for i in range(k):
        for j in range(i + 1, k):
            denom = max(norms[i] * norms[j], 1e-6)  # mergekit's clamp: zero τ gives cos 0
            cosines.append(max(-1.0, min(1.0, float(flat[i] @ flat[j]) / denom)))
    cos = max(0.0, sum(cosines) / len(cosines))
    return k * cos / (1 + (k - 1) * cos)


def model_stock(base, finetuned):
    """Jang et al. 2024 (Model Stock): τ = t·mean_i(τ_i), t from the angle between the τ_i.

    Per tensor (mergekit's default, not per filter). At α = 1 this is the paper's
    θ̂ = t·mean(θ′_i) + (1 − t)·θ0. Needs at least two θ′.
    """
    if len(finetuned) < 2:
        raise ValueError("model_stock needs at least two fine-tuned models")
    taus = _task_vectors(base, finetuned)
    t = model_stock_ratio(taus)
    total = taus[0]
    for tau in taus[1:]:
        total += tau
    return total.mul_(t / len(taus))
