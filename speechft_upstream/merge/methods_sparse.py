"""Sparsifying merge methods beyond TIES/DARE: Model Breadcrumbs and DELLA (pure, no file access).

Rescaling convention (as for speechft's DARE): an entry kept with probability p is divided by p,
the paper's and peft's rule, which keeps every entry's expectation equal to τ. mergekit instead
rescales the whole kept tensor to the original τ's L1 norm; that is not what these functions do.
"""

import torch

from speechft_upstream.merge.methods import _mean, _task_vectors, disjoint_mean


def breadcrumbs_mask(tau, density, gamma):
    """Breadcrumbs' mask: drop the ``gamma`` fraction of largest |τ| and then the smallest, so
    that ``density`` of the entries stay (floor(γ·n) top and n − floor(density·n) − top bottom).

    When density + γ > 1 fewer top entries are dropped to keep ``density`` (mergekit's rule). Ties
    in magnitude are broken by position (a stable sort). Unlike mergekit's slice ``[bot:-top]``,
    a tensor too small for one top entry (γ·n < 1) keeps its ``density`` entries instead of none.
    """
    n = tau.numel()
    keep = int(density * n)
    top = int(gamma * n)
    bottom = n - keep - top
    if bottom < 0:
        top, bottom = top + bottom, 0
    order = torch.sort(tau.abs().reshape(-1), stable=True).indices
    mask = torch.zeros(n, dtype=torch.bool)
    mask[order[bottom:n - top]] = True
    return mask.view(tau.shape)


def breadcrumbs(base, finetuned, density=0.1, gamma=0.01, weights=None):
    """Davari & Belilovsky 2024 (Model Breadcrumbs): mask each τ_i (outliers and small entries
    out), then their (weighted) mean, as ``linear`` and ``dare`` do so that α means the same.
    Masked entries are not rescaled (the paper does not)."""
    taus = [torch.where(breadcrumbs_mask(t, density, gamma), t, torch.zeros_like(t))
            for t in _task_vectors(base, finetuned)]
    return _mean(taus, weights)


def della_keep_probabilities(tau, density, epsilon):
    """DELLA's MagPrune probabilities: within each row (output unit; a 1-D tensor is one row),
    the entry of magnitude rank r (0 = smallest) of n is kept with
    p = density − ε + 2ε·r/(n − 1), from density − ε up to density + ε. Ties: by position."""
    rows = tau.reshape(tau.shape[0], -1) if tau.dim() > 1 else tau.reshape(1, -1)
    n = rows.shape[1]
    if n == 1:
        return torch.full(tau.shape, float(density), dtype=tau.dtype)
    ranks = torch.sort(rows.abs(), dim=1, stable=True).indices.argsort(dim=1).to(tau.dtype)
    return ((density - epsilon) + ranks * (2 * epsilon / (n - 1))).view(tau.shape)


def magprune(tau, density, epsilon, generator):
    """Keep each entry with its MagPrune probability p, divide the kept ones by p."""
    p = della_keep_probabilities(tau, density, epsilon)
    keep = torch.rand(tau.shape, generator=generator, dtype=torch.float32) < p
    return torch.where(keep, tau / p, torch.zeros_like(tau))


def della(base, finetuned, density=0.5, epsilon=0.1, seeds=(0,), weights=None):
    """Deep et al. 2024 (DELLA): MagPrune each τ_i (one seed per θ′; larger magnitudes are kept
    more often), then TIES' sign election and disjoint (weighted) mean. α plays DELLA's λ."""
    if len(seeds) != len(finetuned):
        raise ValueError(f"{len(seeds)} seeds for {len(finetuned)} fine-tuned models")
    taus = [magprune(t, density, epsilon, torch.Generator().manual_seed(s))
            for t, s in zip(_task_vectors(base, finetuned), seeds)]
    return disjoint_mean(torch.stack(taus), weights)
