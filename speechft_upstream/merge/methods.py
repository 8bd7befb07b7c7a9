"""Merge methods: pure functions on tensors, no file access.

Every method turns the task vectors τ_i = θ′_i − θ0 of one tensor into a single τ; the merged
tensor is θ0 + α·τ. Arithmetic runs in float32 (float64 inputs stay float64) so half-precision
checkpoints do not lose the small differences that fine-tuning makes; the result takes θ0's dtype.
"""

import hashlib
import math
import re

import torch

METHODS = ("linear", "task_arithmetic", "ties", "dare")
# TIES keeps the largest 20 % of each τ, DARE keeps a random 10 % (the defaults of their papers).
DEFAULT_DENSITY = {"ties": 0.2, "dare": 0.1}


def _compute_dtype(base):
    return torch.float64 if base.dtype == torch.float64 else torch.float32


def _task_vectors(base, finetuned):
    dtype = _compute_dtype(base)
    b = base.to(dtype)
    return [t.to(dtype) - b for t in finetuned]


def _check_weights(weights, n):
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} fine-tuned models")
    return [float(w) for w in weights]


def _sum(tensors):
    total = tensors[0].clone()
    for t in tensors[1:]:
        total += t
    return total


def linear(base, finetuned, weights=None):
    """Speech-FT: the (weighted) mean of the task vectors.

    Unweighted, it is the plain sum divided by n, added up in input order: exactly what
    ``sum(t - base for t in finetuned) / n`` gives in torch, so a reader can recompute it bit for bit.
    """
    taus = _task_vectors(base, finetuned)
    if weights is None:
        return _sum(taus) / len(taus)
    w = _check_weights(weights, len(taus))
    return _sum([tau * wi for tau, wi in zip(taus, w)]) / sum(w)


def task_arithmetic(base, finetuned, weights=None):
    """Ilharco et al. 2023: the weighted sum of the task vectors (weight 1 each by default)."""
    taus = _task_vectors(base, finetuned)
    w = [1.0] * len(taus) if weights is None else _check_weights(weights, len(taus))
    return _sum([tau * wi for tau, wi in zip(taus, w)])


def trim(tau, density):
    """Keep the ``density`` fraction of entries with the largest magnitude, zero the rest.

    k = floor(density·n) entries; entries tied with the k-th largest magnitude are kept too.
    """
    n = tau.numel()
    k = int(density * n)
    if k >= n:
        return tau.clone()
    if k <= 0:
        return torch.zeros_like(tau)
    magnitude = tau.abs()
    threshold = torch.kthvalue(magnitude.flatten(), n - k + 1).values
    return torch.where(magnitude >= threshold, tau, torch.zeros_like(tau))


def ties(base, finetuned, density=0.2, weights=None):
    """Yadav et al. 2023 (TIES): trim each τ_i, elect a sign per entry, average the agreeing ones.

    Trimming is per tensor (the paper trims over the whole model; per tensor is what a streamed
    merge can do). The elected sign is that of Σ w_i·trim(τ_i); the disjoint mean averages, with
    weights w_i, only the entries that are non-zero and carry the elected sign.
    """
    taus = torch.stack([trim(t, density) for t in _task_vectors(base, finetuned)])
    w = [1.0] * len(finetuned) if weights is None else _check_weights(weights, len(finetuned))
    w = torch.tensor(w, dtype=taus.dtype).view(-1, *([1] * (taus.dim() - 1)))
    weighted = taus * w
    elected = torch.sign(weighted.sum(0))
    agree = (torch.sign(taus) == elected) & (taus != 0)
    total = (weighted * agree).sum(0)
    count = (w * agree).sum(0)
    # count is 0 where no θ′ agrees (or all trimmed away): τ is 0 there, not 0/0.
    return torch.where(count != 0, total / torch.where(count != 0, count, torch.ones_like(count)),
                       torch.zeros_like(total))


def seed_for(seed, name, index):
    """A per-(tensor, model) seed that does not depend on the order tensors are processed in."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def drop_and_rescale(tau, density, generator):
    """DARE: keep each entry with probability ``density``, scale the kept ones by 1/density."""
    keep = torch.rand(tau.shape, generator=generator, dtype=torch.float32) < density
    return torch.where(keep, tau / density, torch.zeros_like(tau))


def dare(base, finetuned, density=0.1, seeds=(0,), weights=None):
    """Yu et al. 2024 (DARE): drop-and-rescale each τ_i (one seed per θ′), then their mean.

    Taking the (weighted) mean, as ``linear`` does, keeps α meaning the same in both methods.
    """
    if len(seeds) != len(finetuned):
        raise ValueError(f"{len(seeds)} seeds for {len(finetuned)} fine-tuned models")
    taus = [drop_and_rescale(t, density, torch.Generator().manual_seed(s))
            for t, s in zip(_task_vectors(base, finetuned), seeds)]
    if weights is None:
        return _sum(taus) / len(taus)
    w = _check_weights(weights, len(taus))
    return _sum([tau * wi for tau, wi in zip(taus, w)]) / sum(w)


def interpolate(base, tau, alpha):
    """θ0 + α·τ in θ0's dtype, as a multiply then an add (not a fused one), so the bits are the
    same as anyone writing the formula out in torch gets."""
    return (base.to(tau.dtype) + alpha * tau).to(base.dtype)


def merge(method, base, finetuned, alphas, name="", weights=None, density=None, seed=0):
    """The merged tensor for each α in ``alphas``; τ is computed once for all of them.

    For linear with one θ′ this is θ0 + α·(θ′ − θ0), the paper's (1−α)·θ0 + α·θ′.
    """
    if method == "linear":
        tau = linear(base, finetuned, weights)
    elif method == "task_arithmetic":
        tau = task_arithmetic(base, finetuned, weights)
    elif method == "ties":
        tau = ties(base, finetuned, DEFAULT_DENSITY["ties"] if density is None else density, weights)
    elif method == "dare":
        seeds = [seed_for(seed, name, i) for i in range(len(finetuned))]
        tau = dare(base, finetuned, DEFAULT_DENSITY["dare"] if density is None else density, seeds, weights)
    else:
        raise ValueError(f"unknown merge method {method!r} (choose from {', '.join(METHODS)})")
    return [interpolate(base, tau, float(a)) for a in alphas]


_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(name):
    """The transformer layer a tensor belongs to (``encoder.layers.<i>.``), or None."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def linear_schedule(start, end, n_layers):
    """α for each of ``n_layers`` layers, linear in depth from ``start`` (first) to ``end`` (last)."""
    if n_layers == 1:
        return [float(start)]
    return [start + (end - start) * i / (n_layers - 1) for i in range(n_layers)]


def alpha_for(name, alpha, layer_alphas=None):
    """The α a tensor gets: its layer's entry in ``layer_alphas``, else the global ``alpha``."""
    index = layer_index(name)
    if layer_alphas is None or index is None or index >= len(layer_alphas):
        return alpha
    return layer_alphas[index]


def is_finite(tensor):
    """True when no entry is NaN or ±Inf; one reduction first, a full check only if it overflows."""
    if not tensor.is_floating_point():
        return True
    if math.isfinite(tensor.sum(dtype=_compute_dtype(tensor)).item()):
        return True
    return bool(torch.isfinite(tensor).all())
