"""Merge methods: pure functions on tensors, no file access.

Every method turns the task vectors τ_i = θ′_i − θ0 of one tensor into a single τ; the merged
tensor is θ0 + α·τ (SLERP alone interpolates θ0 and θ′ directly, with t = α). The methods past
TIES/DARE live in sibling modules (methods_geometry, methods_sparse, methods_svd,
methods_regmean); ``METHODS`` here is the registry of all of them. Arithmetic runs in float32 (float64 inputs stay float64) so half-precision
checkpoints do not lose the small differences that fine-tuning makes; the result takes θ0's dtype.
"""

import hashlib
import math
import re

import torch

METHODS = ("linear", "task_arithmetic", "ties", "dare", "slerp", "model_stock", "breadcrumbs", "della",
           "tsv", "iso", "regmean")
# TIES keeps the largest 20 % of each τ, DARE keeps a random 10 % (the defaults of their papers);
# Breadcrumbs keeps 10 % after dropping the top 1 % (γ); DELLA keeps 50 % ± ε = 0.1 on average.
DEFAULT_DENSITY = {"ties": 0.2, "dare": 0.1, "breadcrumbs": 0.1, "della": 0.5}
DEFAULT_GAMMA, DEFAULT_EPSILON = 0.01, 0.1
# Methods whose τ is a weighted mean or election, so --weights applies to them.
WEIGHTED = ("linear", "task_arithmetic", "ties", "dare", "breadcrumbs", "della")
# Methods that use a seed (random masks).
SEEDED = ("dare", "della")


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


class Workspace:
    """Reusable scratch buffers, one flat buffer per slot, grown to the largest tensor seen.

    Fresh allocations of many MB cost page faults on every tensor (the allocator hands big blocks
    back to the OS); merging into the same few buffers costs them once per run.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, slot, like, dtype):
        numel = like.numel()
        buf = self._buffers.get((slot, dtype))
        if buf is None or buf.numel() < numel:
            buf = self._buffers[(slot, dtype)] = torch.empty(numel, dtype=dtype)
        return buf[:numel].view(like.shape)


def _weighted_sum(base, finetuned, weights, ws):
    """Σ_i w_i·(θ′_i − θ0) added up in input order (weight 1: no multiply)."""
    dtype = _compute_dtype(base)
    ws = ws or Workspace()
    b = base.to(dtype)
    total = None
    for i, t in enumerate(finetuned):
        tau = torch.sub(t.to(dtype), b, out=ws.get(min(i, 1), base, dtype))
        if weights is not None:
            tau.mul_(weights[i])
        if total is None:
            total = tau
        else:
            total += tau
    return total


def linear(base, finetuned, weights=None, ws=None):
    """Speech-FT: the (weighted) mean of the task vectors.

    Unweighted, it is the plain sum divided by n, added up in input order: exactly what
    ``sum(t - base for t in finetuned) / n`` gives in torch, so a reader can recompute it bit for bit.
    """
    if weights is not None:
        weights = _check_weights(weights, len(finetuned))
    total = _weighted_sum(base, finetuned, weights, ws)
    divisor = len(finetuned) if weights is None else sum(weights)
    return total if divisor == 1 else total.div_(divisor)  # x / 1 is x: skip a pass


def task_arithmetic(base, finetuned, weights=None, ws=None):
    """Ilharco et al. 2023: the weighted sum of the task vectors (weight 1 each by default)."""
    if weights is not None:
        weights = _check_weights(weights, len(finetuned))
    return _weighted_sum(base, finetuned, weights, ws)


def _mean(taus, weights):
    """The (weighted) mean of freshly computed task vectors (the first is added into in place)."""
    if weights is None:
        total = taus[0]
        for tau in taus[1:]:
            total += tau
        return total if len(taus) == 1 else total / len(taus)
    w = _check_weights(weights, len(taus))
    total = taus[0] * w[0]
    for tau, wi in zip(taus[1:], w[1:]):
        total += tau * wi
    return total / sum(w)


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
    return disjoint_mean(taus, weights)


def disjoint_mean(taus, weights=None):
    """TIES' election and disjoint mean over stacked task vectors ``taus`` (models first)."""
    n = taus.shape[0]
    w = [1.0] * n if weights is None else _check_weights(weights, n)
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
    """DARE: keep each entry with probability ``density``, scale the kept ones by 1/density.

    The rescale is the DARE paper's and peft's (each entry keeps its expectation); mergekit's
    ``rescale`` instead scales the kept tensor back to the original τ's L1 norm, which differs
    per tensor by the luck of the draw. DELLA (methods_sparse) follows the same rule with
    per-entry probabilities."""
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
    return _mean(taus, weights)


def interpolate(base, tau, alpha, out=None):
    """θ0 + α·τ in θ0's dtype, as a multiply then an add (not a fused one), so the bits are the
    same as anyone writing the formula out in torch gets. ``out``: a compute-dtype buffer to use."""
    out = torch.mul(tau, alpha, out=out) if out is not None else tau * alpha
    out += base  # addition commutes bit for bit; in place saves an allocation
    return out.to(base.dtype)


def task_vector(method, base, finetuned, name="", weights=None, density=None, seed=0, ws=None,
                gamma=None, epsilon=None, stats=None):
    """The merged task vector τ of one tensor (θ̂ = θ0 + α·τ); ``name`` seeds DARE's and DELLA's
    masks; ``stats`` maps tensor names to RegMean's Gram sums (see methods_regmean).

    With a Workspace ``ws``, linear and task_arithmetic return a view of its buffers: valid only
    until the next call with the same workspace.
    """
    if method == "linear":
        return linear(base, finetuned, weights, ws)
    if method == "task_arithmetic":
        return task_arithmetic(base, finetuned, weights, ws)
    density = DEFAULT_DENSITY.get(method) if density is None else density
    seeds = [seed_for(seed, name, i) for i in range(len(finetuned))]
    if method == "ties":
        return ties(base, finetuned, density, weights)
    if method == "dare":
        return dare(base, finetuned, density, seeds, weights)
    from speechft_upstream.merge import methods_geometry, methods_regmean, methods_sparse, methods_svd

    if method == "model_stock":
        return methods_geometry.model_stock(base, finetuned)
    if method == "breadcrumbs":
        return methods_sparse.breadcrumbs(base, finetuned, density, DEFAULT_GAMMA if gamma is None else gamma,
                                          weights)
    if method == "della":
        return methods_sparse.della(base, finetuned, density, DEFAULT_EPSILON if epsilon is None else epsilon,
                                    seeds, weights)
    if method == "tsv":
        return methods_svd.tsv(base, finetuned)
    if method == "iso":
        return methods_svd.iso(base, finetuned)
    if method == "regmean":
        return methods_regmean.task_vector(base, finetuned, (stats or {}).get(name))
    raise ValueError(f"unknown merge method {method!r} (choose from {', '.join(METHODS)})")


def _slerp(base, finetuned, alpha):
    from speechft_upstream.merge.methods_geometry import slerp

    return slerp(base, finetuned, alpha)


def merge(method, base, finetuned, alphas, name="", weights=None, density=None, seed=0, **options):
    """The merged tensor for each α in ``alphas``; τ is computed once for all of them.

    For linear with one θ′ this is θ0 + α·(θ′ − θ0), the paper's (1−α)·θ0 + α·θ′.
    """
    if method == "slerp":
        return [_slerp(base, finetuned, float(a)).to(base.dtype) for a in alphas]
    tau = task_vector(method, base, finetuned, name, weights, density, seed, **options)
    return [interpolate(base, tau, float(a)) for a in alphas]


# Methods whose τ is NaN or Inf wherever an input is: for them checking the result checks the
# inputs too. TIES trims and DARE drops entries, so a NaN there can vanish: check inputs first.
PROPAGATES_NONFINITE = ("linear", "task_arithmetic")
# Methods that work entry by entry, so any slice of a tensor can be merged on its own.
ELEMENTWISE = ("linear", "task_arithmetic")
CHUNK = 1 << 18  # entries per slice: 1 MiB of float32, so a slice stays in cache across its ops


def merge_into(method, base, finetuned, alphas, ws, name="", weights=None, density=None, seed=0, **options):
    """θ0 + α·τ for each α, in θ0's dtype; the tensors are workspace buffers, valid until the
    next call. Returns (results, index of the first α whose result holds NaN/Inf, or None).

    Elementwise methods run slice by slice: subtract, scale, add and the finite check of one slice
    all find it in the CPU cache, instead of each op streaming the whole tensor through memory
    (for large tensors that is most of the arithmetic's time). Same bits as ``merge``.
    """
    dtype = _compute_dtype(base)
    flat = base.reshape(-1)
    outs = [ws.get(("out", j), flat, dtype) for j in range(len(alphas))]
    finite = [True] * len(alphas)
    if method in ELEMENTWISE:
        parts = [t.reshape(-1) for t in finetuned]
        for start in range(0, flat.numel(), CHUNK):
            piece = slice(start, start + CHUNK)
            tau = task_vector(method, flat[piece], [t[piece] for t in parts], name, weights, density, seed, ws)
            for j, alpha in enumerate(alphas):
                interpolate(flat[piece].to(dtype), tau, float(alpha), out=outs[j][piece])
                finite[j] = finite[j] and is_finite(outs[j][piece])
    elif method == "slerp":
        for j, alpha in enumerate(alphas):
            outs[j].copy_(_slerp(base, finetuned, float(alpha)).reshape(-1))
            finite[j] = is_finite(outs[j])
    else:
        tau = task_vector(method, base, finetuned, name, weights, density, seed, **options).reshape(-1)
        for j, alpha in enumerate(alphas):
            interpolate(flat.to(dtype), tau, float(alpha), out=outs[j])
            finite[j] = is_finite(outs[j])
    results = [out.view(base.shape).to(base.dtype) for out in outs]
    return results, next((j for j, ok in enumerate(finite) if not ok), None)


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
