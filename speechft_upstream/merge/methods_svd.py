"""Merge methods on the singular vectors of each weight matrix: TSV-M and ISO-C (pure).

Both act on 2-D tensors only (linear layers); every other tensor (biases, LayerNorms, convs)
gets the mean of its task vectors, as in the authors' code. SVDs run in the compute dtype
(float32, or float64 for float64 inputs).
"""

import torch

from speechft_upstream.merge.methods import _mean, _task_vectors


def _orthogonal_factor(matrix):
    """The orthogonal matrix nearest ``matrix`` (Procrustes / polar factor): P·Qᵀ from its SVD."""
    p, _, qh = torch.linalg.svd(matrix, full_matrices=False)
    return p @ qh


def tsv(base, finetuned):
    """Gargiulo et al. 2025 (TSV-Merge): per matrix, each τ_i keeps its top 1/T of singular
    triplets (k = floor(r/T) of rank r = min(rows, cols)); the kept U's and V's, side by side,
    are replaced by their nearest orthogonal matrices, which removes the interference between
    tasks' subspaces, and τ = U⊥·diag(σ)·V⊥ᵀ. One θ′ gives back its τ. Where r < T no triplet
    fits, and the tensor gets the mean τ.
    """
    taus = _task_vectors(base, finetuned)
    n = len(taus)
    if base.dim() != 2 or min(base.shape) < n:
        return _mean(taus, None)
    rows, cols = base.shape
    r = min(rows, cols)
    k = r // n
    u_all = torch.zeros(rows, r, dtype=taus[0].dtype)
    s_all = torch.zeros(r, dtype=taus[0].dtype)
    v_all = torch.zeros(r, cols, dtype=taus[0].dtype)
    for i, tau in enumerate(taus):
        u, s, vh = torch.linalg.svd(tau, full_matrices=False)
        block = slice(i * k, (i + 1) * k)
        u_all[:, block], s_all[block], v_all[block] = u[:, :k], s[:k], vh[:k]
    return _orthogonal_factor(u_all) @ torch.diag(s_all) @ _orthogonal_factor(v_all)


def iso(base, finetuned):
    """Marczak et al. 2025 (ISO-C): per matrix, the task-arithmetic sum Σ τ_i with its singular
    values all set to their mean: τ = mean(σ)·U·Vᵀ, an isotropic spectrum over the common
    subspace. Other tensors get the mean τ."""
    taus = _task_vectors(base, finetuned)
    if base.dim() != 2:
        return _mean(taus, None)
    total = taus[0]
    for tau in taus[1:]:
        total += tau
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return (u * s.mean()) @ vh
