"""SLERP, Model Stock, Breadcrumbs, DELLA, TSV-M, ISO-C and RegMean's solve, against values
worked out by hand (in the comments) on small tensors."""

import math

import pytest
import torch

from speechft_upstream.merge import methods, methods_geometry, methods_regmean, methods_sparse, methods_svd

T = torch.tensor
R2 = math.sqrt(2)


def close(a, b, tol=1e-6):
    return torch.allclose(a.double(), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0)


# --- slerp ----------------------------------------------------------------------------------------

def test_slerp_quarter_circle_and_norms():
    # θ = 90°, t = ½: sin(45°)/sin(90°) = √2/2 on each unnormalised end: [2·√2/2, 4·√2/2]
    out = methods.merge("slerp", T([2.0, 0.0]), [T([0.0, 4.0])], [0.0, 0.5, 1.0])
    assert torch.equal(out[0], T([2.0, 0.0])) and torch.equal(out[2], T([0.0, 4.0]))
    assert close(out[1], [R2, 2 * R2])
    # a matrix is one vector: θ = 90°, t = ⅓: s0 = sin(60°) = √3/2, s1 = sin(30°) = ½
    (m,) = methods.merge("slerp", T([[1.0, 0.0], [0.0, 0.0]]), [T([[0.0, 0.0], [0.0, 1.0]])], [1 / 3])
    assert close(m, [[math.sqrt(3) / 2, 0.0], [0.0, 0.5]])
    # θ = 60° (cos ½), t = ½: sin(30°)/sin(60°) = 1/√3 each: ([1,0] + [½, √3/2]) / √3
    (h,) = methods.merge("slerp", T([1.0, 0.0]), [T([0.5, math.sqrt(3) / 2])], [0.5])
    assert close(h, [1.5 / math.sqrt(3), 0.5])


def test_slerp_parallel_falls_back_to_linear_and_needs_one_model():
    # cos = 1/√1.0001 = 0.99995 > 0.9995: linear, [1, 0] + 0.25·[0, 0.01]
    (out,) = methods.merge("slerp", T([1.0, 0.0]), [T([1.0, 0.01])], [0.25])
    assert close(out, [1.0, 0.0025])
    (zero,) = methods.merge("slerp", T([0.0, 0.0]), [T([2.0, 2.0])], [0.5])  # zero norm: linear
    assert close(zero, [1.0, 1.0])
    with pytest.raises(ValueError, match="two models"):
        methods.merge("slerp", T([1.0]), [T([2.0]), T([3.0])], [0.5])


# --- model stock ----------------------------------------------------------------------------------

def test_model_stock_two_and_three_models():
    # τ1 = [1,0], τ2 = [1,1]: cos = 1/√2, t = 2cos/(1+cos) = 2/(√2+1) = 2(√2−1); mean τ = [1, ½]
    t = 2 * (R2 - 1)
    (out,) = methods.merge("model_stock", torch.zeros(2), [T([1.0, 0.0]), T([1.0, 1.0])], [1.0])
    assert close(out, [t, t / 2])
    # cos12 = 0, cos13 = cos23 = 1/√2: mean √2/3; t = 3·(√2/3)/(1 + 2√2/3) = √2/(1 + 2√2/3)
    t3 = R2 / (1 + 2 * R2 / 3)
    fts = [T([1.0, 0.0]), T([0.0, 1.0]), T([1.0, 1.0])]
    (three,) = methods.merge("model_stock", torch.zeros(2), fts, [1.0])
    assert close(three, [t3 * 2 / 3, t3 * 2 / 3])
    # with θ0 ≠ 0, α = 1 is the paper's t·mean(θ′) + (1 − t)·θ0
    base = T([5.0, -1.0])
    (moved,) = methods.merge("model_stock", base, [base + f for f in fts], [1.0])
    assert close(moved, t3 * (base + sum(fts) / 3) + (1 - t3) * base, 1e-5)


def test_model_stock_opposite_directions_stay_at_base():
    # cos = −1: taken as 0, so t = 0 and θ̂ = θ0 (the formula would divide by 1 + (k−1)·cos = 0)
    (out,) = methods.merge("model_stock", T([1.0, 1.0]), [T([2.0, 1.0]), T([0.0, 1.0])], [1.0])
    assert torch.equal(out, T([1.0, 1.0]))
    with pytest.raises(ValueError, match="at least two"):
        methods.merge("model_stock", T([1.0]), [T([2.0])], [1.0])


# --- breadcrumbs ----------------------------------------------------------------------------------

def test_breadcrumbs_mask_drops_outliers_and_small_entries():
    # n = 5, density 0.4, γ 0.2: keep 2, drop the top 1 and the bottom 2
    # τ1 = [1,-9,3,-2,5]: by |τ|: 1, 2, 3, 5, 9 -> keeps 3 and 5
    # τ2 = [4,1,-2,8,.5]: by |τ|: .5, 1, 2, 4, 8 -> keeps -2 and 4
    t1, t2 = T([1.0, -9.0, 3.0, -2.0, 5.0]), T([4.0, 1.0, -2.0, 8.0, 0.5])
    base = torch.zeros(5)
    (out,) = methods.merge("breadcrumbs", base, [t1, t2], [1.0], density=0.4, gamma=0.2)
    assert torch.equal(out, T([2.0, 0.0, 0.5, 0.0, 2.5]))  # mean of [0,0,3,0,5] and [4,0,-2,0,0]
    (w,) = methods.merge("breadcrumbs", base, [t1, t2], [1.0], density=0.4, gamma=0.2, weights=[3.0, 1.0])
    assert torch.equal(w, T([1.0, 0.0, 1.75, 0.0, 3.75]))  # (3·[0,0,3,0,5] + [4,0,-2,0,0]) / 4


def test_breadcrumbs_mask_edge_rules():
    tau = T([1.0, -9.0, 3.0, -2.0, 5.0])
    # density 0.8 + γ 0.4 > 1: keep 4, so only the single largest (-9) goes
    assert methods_sparse.breadcrumbs_mask(tau, 0.8, 0.4).tolist() == [True, False, True, True, True]
    # 3 entries, γ·n < 1 drops no outlier; density ⅔ keeps 2: the smallest (0.5) goes
    assert methods_sparse.breadcrumbs_mask(T([0.5, -4.0, 2.0]), 2 / 3 + 1e-9, 0.01).tolist() == [False, True, True]


# --- della ----------------------------------------------------------------------------------------

def test_della_keep_probabilities_by_rank():
    # ranks of |[0.1, -3, 2, 0.5]| are 0, 3, 2, 1; p = 0.3 + 0.4·r/3
    p = methods_sparse.della_keep_probabilities(T([0.1, -3.0, 2.0, 0.5]), 0.5, 0.2)
    assert close(p, [0.3, 0.7, 0.3 + 0.8 / 3, 0.3 + 0.4 / 3])
    # per row of a matrix: each row of two spans 0.4 .. 0.6
    p2 = methods_sparse.della_keep_probabilities(T([[1.0, 2.0], [4.0, 3.0]]), 0.5, 0.1)
    assert close(p2, [[0.4, 0.6], [0.6, 0.4]])


def test_della_drop_rescale_and_election():
    # p = 1 everywhere (density 1, ε 0): nothing dropped, so DELLA is TIES' election and mean:
    # sums [2, 5, -3] -> signs [+, +, -]; agreeing: (3+1)/2, (4+2)/2, (-3-2)/2
    fts = [T([3.0, -1.0, 2.0]), T([1.0, 4.0, -3.0]), T([-2.0, 2.0, -2.0])]
    (out,) = methods.merge("della", torch.zeros(3), fts, [1.0], density=1.0, epsilon=0.0)
    assert torch.equal(out, T([2.0, 3.0, -2.5]))
    # one model: each entry kept where the seeded draw is below its p, divided by that p
    tau = T([0.1, -3.0, 2.0, 0.5])
    p = T([0.3, 0.7, 0.3 + 0.8 / 3, 0.3 + 0.4 / 3])
    draws = torch.rand(4, generator=torch.Generator().manual_seed(11))
    want = torch.where(draws < p, tau / p, torch.zeros(4))
    got = methods_sparse.della(torch.zeros(4), [tau], 0.5, 0.2, seeds=[11])
    assert close(got, want)
    # the rescale keeps each entry's expectation: the mean over many seeds approaches τ
    mean = sum(methods_sparse.magprune(tau, 0.5, 0.2, torch.Generator().manual_seed(s)) for s in range(4000)) / 4000
    assert close(mean, tau, 0.15)


# --- tsv / iso ------------------------------------------------------------------------------------

def test_tsv_orthogonalises_the_tasks_subspaces():
    z = torch.zeros(2, 2)
    # τ1 = 2·e1e1ᵀ (σ 2), τ2 = [[1,1],[1,1]] = 2·uuᵀ, u = [1,1]/√2; k = 1 each.
    # U = [e1 u], V = [e1 u]: polar factors are rotations by −22.5° and +22.5°, so
    # U⊥·diag(2, 2)·V⊥ᵀ = 2·R(−22.5°)·R(22.5°) = 2·I
    (out,) = methods.merge("tsv", z, [T([[2.0, 0.0], [0.0, 0.0]]), T([[1.0, 1.0], [1.0, 1.0]])], [1.0])
    assert close(out, [[2.0, 0.0], [0.0, 2.0]], 1e-5)
    # orthogonal tasks in a 2×3 matrix: nothing to fix, the sum comes back
    t1, t2 = T([[3.0, 0, 0], [0, 0, 0]]), T([[0.0, 0, 0], [0, 0, 2]])
    (orth,) = methods.merge("tsv", torch.zeros(2, 3), [t1, t2], [1.0])
    assert close(orth, t1 + t2, 1e-5)


def test_tsv_one_model_vectors_and_too_many_models():
    tau = T([[1.0, 2.0], [3.0, -1.0]])
    assert close(methods_svd.tsv(torch.zeros(2, 2), [tau]), tau, 1e-5)  # k = r: τ itself
    assert torch.equal(methods_svd.tsv(torch.zeros(2), [T([1.0, 3.0]), T([3.0, 1.0])]), T([2.0, 2.0]))
    three = [T([[3.0, 0.0], [0.0, 0.0]])] * 3  # rank 2 < 3 models: the mean τ
    assert close(methods_svd.tsv(torch.zeros(2, 2), three), three[0])


def test_iso_flattens_the_spectrum():
    z = torch.zeros(2, 2)
    # [[2,1],[1,2]]: σ = 3, 1 (mean 2), symmetric positive definite so U·Vᵀ = I: 2·I
    assert close(methods_svd.iso(z, [T([[2.0, 1.0], [1.0, 2.0]])]), [[2.0, 0.0], [0.0, 2.0]], 1e-5)
    # the sum [[0,2],[0,0]] + [[0,0],[1,0]] = [[0,2],[1,0]]: σ = 2, 1 (mean 1.5), U·Vᵀ = [[0,1],[1,0]]
    (out,) = methods.merge("iso", z, [T([[0.0, 2.0], [0.0, 0.0]]), T([[0.0, 0.0], [1.0, 0.0]])], [1.0])
    assert close(out, [[0.0, 1.5], [1.5, 0.0]], 1e-5)
    assert torch.equal(methods_svd.iso(torch.zeros(2), [T([1.0, 3.0]), T([3.0, 1.0])]), T([2.0, 2.0]))


# --- regmean --------------------------------------------------------------------------------------

def test_regmean_solve_by_hand():
    # diagonal Grams, scale 1: a per-input weighted mean: [(2·1 + 1·3)/3, (1·2 + 3·0)/4]
    w = methods_regmean.regmean([T([[2.0, 0.0], [0.0, 1.0]]), T([[1.0, 0.0], [0.0, 3.0]])],
                                [T([[1.0, 2.0]]), T([[3.0, 0.0]])], scale=1.0)
    assert close(w, [[5 / 3, 0.5]])
    # G1 = [[2,2],[2,4]] -> a = ½ -> [[2,1],[1,4]]; G2 = 2·I. W1 = [1,0], W2 = [0,1].
    # Σ G̃ = [[4,1],[1,6]], Σ G̃·Wᵀ = [2,1] + [0,2] = [2,3]; inverse (1/23)[[6,-1],[-1,4]] -> [9, 10]/23
    w = methods_regmean.regmean([T([[2.0, 2.0], [2.0, 4.0]]), 2 * torch.eye(2)], [T([[1.0, 0.0]]), T([[0.0, 1.0]])],
                                scale=0.5)
    assert close(w, [[9 / 23, 10 / 23]], 1e-12)
    assert close(methods_regmean.reduce_off_diagonal(T([[2.0, 2.0], [2.0, 4.0]]), 0.5), [[2.0, 1.0], [1.0, 4.0]])


def test_regmean_inactive_inputs_take_the_mean():
    # input 2 never fires (zero row and column): its column is the mean (4 + 0)/2; input 1 solves
    g = T([[1.0, 0.0], [0.0, 0.0]])
    w = methods_regmean.regmean([g, 3 * g], [T([[1.0, 4.0]]), T([[5.0, 0.0]])], scale=1.0)
    assert close(w, [[(1 * 1 + 3 * 5) / 4, 2.0]])


def test_streamed_stats_equal_the_textbook_formula():
    """The identity regmean_stats relies on: accumulating S = ΣXᵀX and C = a·ΣXᵀ(XWᵀ) batch by
    batch, plus (1 − a)·diag(G_i)·W_iᵀ per model, gives RegMean's Σ G̃_i and Σ G̃_i·W_iᵀ."""
    from speechft_upstream.merge.regmean_stats import _Stats

    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(40, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    ws = [torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    stats = _Stats(0.7)
    for x, w in zip(xs, ws):
        for batch in x.split(13):
            stats.add("in", batch, {"w": (w, batch @ w.T)}, "test")
        stats.end_model()
    gram, cross = stats.result()["w"]
    want = methods_regmean.regmean([x.T @ x for x in xs], ws, scale=0.7)
    assert close(methods_regmean.solve(gram, cross, ws[0]), want, 1e-10)


def test_regmean_task_vector_without_stats_is_the_mean():
    base = T([1.0, 1.0])
    tau = methods.task_vector("regmean", base, [T([3.0, 1.0]), T([1.0, 5.0])], name="x.bias", stats={})
    assert torch.equal(tau, T([1.0, 2.0]))
