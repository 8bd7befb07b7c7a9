"""Merge methods against values worked out by hand on small tensors."""

import pytest
import torch

from speechft_upstream.merge import methods

T = torch.tensor
BASE = T([1.0, 2.0, 3.0, 4.0])


def test_linear_one_finetuned_is_paper_formula():
    ft = T([3.0, 2.0, 1.0, 8.0])  # τ = [2, 0, -2, 4]
    (out,) = methods.merge("linear", BASE, [ft], [0.25])
    assert torch.equal(out, T([1.5, 2.0, 2.5, 5.0]))
    assert torch.equal(out, BASE + 0.25 * (ft - BASE))


def test_linear_mean_of_task_vectors_several_alphas():
    fts = [T([3.0, 2.0, 1.0, 8.0]), T([1.0, 4.0, 3.0, 0.0])]  # τ1 = [2,0,-2,4], τ2 = [0,2,0,-4]
    out = methods.merge("linear", BASE, fts, [0.0, 0.5, 1.0])
    # mean τ = [1, 1, -1, 0]
    assert torch.equal(out[0], BASE)
    assert torch.equal(out[1], T([1.5, 2.5, 2.5, 4.0]))
    assert torch.equal(out[2], T([2.0, 3.0, 2.0, 4.0]))


def test_linear_weighted_mean():
    fts = [BASE + T([4.0, 0, 0, 0]), BASE + T([0.0, 4.0, 0, 0])]
    (out,) = methods.merge("linear", BASE, fts, [1.0], weights=[3.0, 1.0])
    # (3·τ1 + 1·τ2) / 4 = [3, 1, 0, 0]
    assert torch.equal(out, BASE + T([3.0, 1.0, 0, 0]))


def test_task_arithmetic_weighted_sum():
    fts = [BASE + T([1.0, 0, 2, 0]), BASE + T([1.0, 1, 0, 0])]
    (plain,) = methods.merge("task_arithmetic", BASE, fts, [0.5])
    assert torch.equal(plain, BASE + 0.5 * T([2.0, 1, 2, 0]))
    (weighted,) = methods.merge("task_arithmetic", BASE, fts, [1.0], weights=[2.0, -1.0])
    assert torch.equal(weighted, BASE + T([1.0, -1, 4, 0]))


def test_trim_keeps_largest_magnitudes():
    tau = T([0.1, -5.0, 3.0, -0.2, 4.0])
    assert torch.equal(methods.trim(tau, 0.4), T([0.0, -5.0, 0.0, 0.0, 4.0]))
    assert torch.equal(methods.trim(tau, 1.0), tau)
    assert torch.equal(methods.trim(tau, 0.1), torch.zeros(5))  # floor(0.5) = 0 entries


def test_ties_trim_elect_disjoint_mean():
    base = torch.zeros(4)
    t1 = T([3.0, -1.0, 2.0, 0.1])
    t2 = T([1.0, 4.0, -3.0, 0.2])
    t3 = T([-2.0, 2.0, -2.0, -0.1])
    # density 0.75 keeps 3 of 4 entries per τ: t1 drops 0.1, t2 drops 0.2, t3 drops -0.1.
    # sums: [2, 5, -3, 0] -> signs [+, +, -, 0]
    # entry 0: agreeing 3, 1 -> 2; entry 1: 4, 2 -> 3; entry 2: -3, -2 -> -2.5; entry 3: none -> 0
    (out,) = methods.merge("ties", base, [t1, t2, t3], [1.0], density=0.75)
    assert torch.equal(out, T([2.0, 3.0, -2.5, 0.0]))
    (half,) = methods.merge("ties", base + 1, [t1 + 1, t2 + 1, t3 + 1], [0.5], density=0.75)
    assert torch.equal(half, 1 + 0.5 * T([2.0, 3.0, -2.5, 0.0]))


def test_ties_weights_in_election_and_mean():
    base = torch.zeros(2)
    t1, t2 = T([1.0, 2.0]), T([-1.0, 2.0])
    # weights 1, 3: entry 0 sum = 1 - 3 = -2 -> minus wins, mean of agreeing = (3·-1)/3 = -1
    (out,) = methods.merge("ties", base, [t1, t2], [1.0], density=1.0, weights=[1.0, 3.0])
    assert torch.equal(out, T([-1.0, 2.0]))


def test_dare_seeded_drop_and_rescale():
    base = torch.zeros(1000)
    ft = torch.ones(1000)
    a = methods.merge("dare", base, [ft], [1.0], name="encoder.layers.0.fc1.weight", density=0.25, seed=7)[0]
    b = methods.merge("dare", base, [ft], [1.0], name="encoder.layers.0.fc1.weight", density=0.25, seed=7)[0]
    c = methods.merge("dare", base, [ft], [1.0], name="encoder.layers.0.fc1.weight", density=0.25, seed=8)[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert set(a.unique().tolist()) <= {0.0, 4.0}  # kept entries rescaled by 1/density
    assert 150 < int((a != 0).sum()) < 350

    # the same mask by hand: the documented per-(seed, tensor, model) generator
    seed = methods.seed_for(7, "encoder.layers.0.fc1.weight", 0)
    keep = torch.rand(1000, generator=torch.Generator().manual_seed(seed)) < 0.25
    assert torch.equal(a, torch.where(keep, 4.0, 0.0))


def test_dare_mean_over_models_then_alpha():
    base = T([1.0, 1.0])
    (out,) = methods.merge("dare", base, [T([3.0, 3.0]), T([5.0, 5.0])], [0.5], density=1.0)
    assert torch.equal(out, T([2.5, 2.5]))  # density 1 keeps everything: θ0 + 0.5·mean([2,4])


def test_layer_alpha_list_and_linear_schedule():
    assert methods.linear_schedule(0.1, 0.5, 5) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert methods.linear_schedule(0.3, 0.9, 1) == [0.3]
    alphas = [0.1, 0.2, 0.3]
    assert methods.alpha_for("encoder.layers.2.fc1.weight", 0.25, alphas) == 0.3
    assert methods.alpha_for("encoder.layers.0.self_attn.k_proj.bias", 0.25, alphas) == 0.1
    assert methods.alpha_for("feature_extractor.conv_layers.1.0.weight", 0.25, alphas) == 0.25
    assert methods.alpha_for("encoder.pos_conv.0.bias", 0.25, alphas) == 0.25
    assert methods.alpha_for("encoder.layers.1.fc1.weight", 0.25, None) == 0.25

    base, ft = torch.zeros(2), T([4.0, 8.0])
    (out,) = methods.merge("linear", base, [ft], [methods.alpha_for("encoder.layers.1.fc2.bias", 0.9, alphas)])
    assert torch.equal(out, T([0.8, 1.6]))


def test_half_precision_computed_in_float32_kept_in_dtype():
    base = torch.full((3,), 1.0, dtype=torch.float16)
    ft = base + torch.tensor([2 ** -10, 2 ** -9, 0.0], dtype=torch.float16)
    (out,) = methods.merge("linear", base, [ft], [0.5])
    assert out.dtype == torch.float16
    expected = (base.float() + 0.5 * (ft.float() - base.float())).half()
    assert torch.equal(out, expected)


def test_is_finite():
    assert methods.is_finite(T([1.0, 2.0]))
    assert not methods.is_finite(T([1.0, float("nan")]))
    assert not methods.is_finite(T([float("inf"), 1.0]))
    assert methods.is_finite(T([3e38, 3e38]))  # the sum overflows, the entries do not
    assert methods.is_finite(torch.arange(3))


@pytest.mark.parametrize("method, extra", [("linear", {}), ("linear", {"weights": [2.0, 1.0]}),
                                           ("task_arithmetic", {}), ("ties", {"density": 0.3}),
                                           ("dare", {"density": 0.5, "seed": 4})])
def test_merge_into_slices_give_the_same_bits(method, extra):
    """The streamed path (cache-sized slices into reused buffers) equals the plain one exactly."""
    g = torch.Generator().manual_seed(0)
    n = methods.CHUNK * 2 + 123  # three slices, the last one short
    base = torch.randn(n // 3 + 1, 3, generator=g)[: n // 3]
    fts = [base + 0.01 * torch.randn(base.shape, generator=g) for _ in range(2)]
    ws = methods.Workspace()
    for _ in range(2):  # the second call reuses the buffers
        got, bad = methods.merge_into(method, base, fts, [0.25, 0.75], ws, name="w", **extra)
        want = methods.merge(method, base, fts, [0.25, 0.75], name="w", **extra)
        assert bad is None
        assert all(torch.equal(a, b) for a, b in zip(got, want))
    got, bad = methods.merge_into(method, base, [fts[0], fts[1] + 3e38], [0.25, 1e3], ws, name="w", **extra)
    assert bad is not None  # α = 1000 overflows float32 whatever the method
