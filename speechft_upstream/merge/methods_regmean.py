"""RegMean (Jin et al. 2023): the closed-form merge of linear layers from their input Grams (pure).

For a linear layer y = x·Wᵀ with inputs X_i in model i, RegMean's merged weight minimises
Σ_i ‖X_i·Wᵀ − X_i·W_iᵀ‖², so Wᵀ = (Σ_i G_i)⁻¹ Σ_i G_i·W_iᵀ with G_i = X_iᵀX_i. RegMean scales
each Gram's off-diagonal entries by a (``scale``, 0.9 by default; 1 is the plain solution, 0 a
per-input weighted mean). Everything but linear weights gets the plain mean.

The Grams are gathered on audio by ``merge.regmean_stats``; these functions only solve.
"""

import torch

DEFAULT_SCALE = 0.9


def reduce_off_diagonal(gram, scale):
    """a·G + (1 − a)·diag(G): off-diagonal entries scaled by ``scale``, the diagonal kept."""
    out = gram * scale
    out.diagonal().copy_(gram.diagonal())
    return out


def solve(gram_sum, cross_sum, fallback):
    """W with Wᵀ = gram_sum⁻¹ · cross_sum (float64), gram_sum = Σ G̃_i, cross_sum = Σ G̃_i·W_iᵀ.

    Inputs that were zero on every frame (zero diagonal) carry no information about their
    columns of W: those columns take ``fallback``'s (the mean W_i); the rest solve the system
    restricted to the active inputs, which is positive definite once a < 1 (or the Grams are).
    """
    gram_sum, cross_sum = gram_sum.double(), cross_sum.double()
    active = gram_sum.diagonal() > 0
    out = fallback.double().clone()
    if bool(active.all()):
        return torch.linalg.solve(gram_sum, cross_sum).T
    idx = active.nonzero().squeeze(1)
    if idx.numel():
        sub = gram_sum[idx][:, idx]
        # the inactive inputs' rows of cross_sum are zero too (they multiply a zero diagonal)
        out[:, idx] = torch.linalg.solve(sub, cross_sum[idx]).T
    return out


def regmean(grams, weights, scale=DEFAULT_SCALE):
    """The textbook formula over per-model Grams ``grams[i]`` (in × in) and weights (out × in)."""
    reduced = [reduce_off_diagonal(g.double(), scale) for g in grams]
    gram_sum = sum(reduced)
    cross_sum = sum(g @ w.double().T for g, w in zip(reduced, weights))
    return solve(gram_sum, cross_sum, sum(w.double() for w in weights) / len(weights))


def task_vector(base, finetuned, stats):
    """τ of one tensor: RegMean's W − θ0 where ``stats`` = (Σ G̃_i, Σ G̃_i·W_iᵀ) is given, else
    the mean τ. The result is in the compute dtype of θ0 (float64 stays float64)."""
    from speechft_upstream.merge.methods import _compute_dtype, _mean, _task_vectors

    dtype = _compute_dtype(base)
    if stats is None:
        return _mean(_task_vectors(base, finetuned), None)
    fallback = sum(t.double() for t in finetuned) / len(finetuned)
    merged = solve(stats[0], stats[1], fallback)
    return (merged - base.double()).to(dtype)
