"""Permutation alignment: the permuted model keeps its function, alignment finds the permutation.

Tiny models whose every weight (norm affines included, which start at 1 / 0) is randomised, so
a tensor left out of a permutation shows. Function checks in float64 run s3prl's own modules
(align_stats.hidden_states, checked against the model's own forward); the files `speechft
align` writes are also run through speechft's s3prl expert.
"""

import numpy as np
import pytest
import soundfile
import torch

from speechft_upstream.checkpoints import files, tiny
from speechft_upstream.merge import align_stats as stats
from speechft_upstream.merge import permute
from tests.test_merge_cli import speechft

ALL = ("cnn", "ffn", "attn")


def randomised(arch, seed):
    """A tiny model whose norm affines and biases (initialised to 1 / 0) are random too."""
    state = tiny.make_tiny(arch, seed)
    g = torch.Generator().manual_seed(100 + seed)
    weights = files.weights(state, arch)
    for name, value in weights.items():
        if value.is_floating_point() and ("norm" in name or name.endswith((".2.weight", "bias"))):
            weights[name] = (value + 0.3 * torch.randn(value.shape, generator=g)).contiguous()
    return state


def layout(state, arch):
    cfg = stats.settings(state, arch)
    return permute.layout_of(files.weights(state, arch), cfg["heads"], cfg["pos_groups"])


def states64(state, arch, weights, wav):
    model = stats.build_model(state, arch, weights, dtype=torch.float64)
    return stats.hidden_states(model, arch, wav.double())


def max_diff(xs, ys):
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("align_audio")
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 16000
    for i in range(4):
        wav = 0.3 * np.sin(2 * np.pi * (120 + 60 * i) * t * (1 + 0.3 * np.sin(2 * t))) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(folder / f"{i}.wav", wav.astype(np.float32), 16000)
    return folder


@pytest.fixture(scope="module")
def wav():
    return torch.randn(1, 12000, generator=torch.Generator().manual_seed(5))


def test_staged_forward_is_the_models_own(wav):
    state = tiny.make_tiny("hubert")
    model = stats.build_model(state, "hubert")
    with torch.no_grad():
        ref = model(wav, mask=False, features_only=True)["x"][0]
    assert torch.equal(stats.hidden_states(model, "hubert", wav)[-1], ref)


@pytest.mark.parametrize("arch,points,residual", [
    ("hubert", ALL, False), ("hubert", ALL, True), ("wav2vec2", ALL, False), ("wav2vec2", ALL, True),
    ("wavlm", ("cnn", "ffn"), False)])
def test_random_permutations_keep_the_function(arch, points, residual, wav):
    state = randomised(arch, 0)
    weights, lay = files.weights(state, arch), layout(state, arch)
    ref = states64(state, arch, weights, wav)
    spec = permute.random_spec(lay, points, torch.Generator().manual_seed(1), residual=residual)
    permuted = permute.apply(weights, spec, lay)
    moved = [n for n in weights if not torch.equal(weights[n], permuted[n])]
    assert len(moved) >= 18
    out = states64(state, arch, permuted, wav)
    if residual:
        out = [h[:, permute.invert(spec["residual"])] for h in out]
        assert max_diff(states64(state, arch, permuted, wav), ref) > 1e-2  # the stream itself moved
    assert max_diff(out, ref) < 1e-5


def _break(weights, spec, lay, restore):
    """The permuted weights with ``restore`` tensors put back as they were: a rule left out."""
    permuted = permute.apply(weights, spec, lay)
    for name in restore:
        permuted[name] = weights[name]
    return permuted


def test_negative_controls_break_the_function(wav):
    state = randomised("hubert", 0)
    weights, lay = files.weights(state, "hubert"), layout(state, "hubert")
    ref = states64(state, "hubert", weights, wav)
    g = torch.Generator().manual_seed(2)
    d = lay["dim"] // lay["heads"]
    heads = torch.tensor([1, 0, 3, 2])
    identity = torch.arange(lay["dim"])

    # v (and out_proj) moved to other heads while q and k stay: each head's attention pattern now
    # weighs another head's values. The same reassignment applied to q/k too is fine.
    v_only = {"attn.0": {"qk": identity, "v": permute.head_index(heads, [torch.randperm(d, generator=g) for _ in range(4)], d)}}
    both = {"attn.0": {"qk": permute.head_index(heads, [torch.arange(d)] * 4, d), "v": v_only["attn.0"]["v"]}}
    assert max_diff(states64(state, "hubert", permute.apply(weights, both, lay), wav), ref) < 1e-5
    assert max_diff(states64(state, "hubert", permute.apply(weights, v_only, lay), wav), ref) > 1e-2

    # the last conv's channels permuted without the feature LayerNorm
    last = f"cnn.{lay['n_conv'] - 1}"
    spec = {last: torch.randperm(lay["channels"][-1], generator=g)}
    assert max_diff(states64(state, "hubert", permute.apply(weights, spec, lay), wav), ref) < 1e-5
    broken = _break(weights, spec, lay, ["layer_norm.weight", "layer_norm.bias"])
    assert max_diff(states64(state, "hubert", broken, wav), ref) > 1e-2

    # conv 0's rows permuted without its GroupNorm's affine
    spec = {"cnn.0": torch.randperm(lay["channels"][0], generator=g)}
    assert max_diff(states64(state, "hubert", permute.apply(weights, spec, lay), wav), ref) < 1e-5
    broken = _break(weights, spec, lay, ["feature_extractor.conv_layers.0.2.weight", "feature_extractor.conv_layers.0.2.bias"])
    assert max_diff(states64(state, "hubert", broken, wav), ref) > 1e-2


def _write(state, path, weights=None, arch="hubert"):
    state = dict(state)
    if weights is not None:
        state["model_weight" if arch != "wavlm" else "model"] = weights
    files.save_atomic(state, path)
    return path


def _expert_states(arch, path, wav):
    from speechft_upstream.upstream import expert

    module = expert.build(arch, path).eval()
    with torch.no_grad():
        return [h[0] for h in module([wav[0]])["hidden_states"]]


@pytest.mark.parametrize("arch,points", [("hubert", "cnn,ffn,attn,residual"), ("wav2vec2", "cnn,ffn,attn"),
                                         ("wavlm", "cnn,ffn")])
def test_shuffled_copy_is_recovered(arch, points, audio, tmp_path, wav):
    state = randomised(arch, 0)
    weights, lay = files.weights(state, arch), layout(state, arch)
    spec = permute.random_spec(lay, points.split(","), torch.Generator().manual_seed(7), residual="residual" in points)
    a = _write(state, tmp_path / "a.pt", arch=arch)
    b = _write(state, tmp_path / "b.pt", permute.apply(weights, spec, lay), arch=arch)
    out = tmp_path / "b_aligned.pt"
    proc = speechft("align", "--reference", a, "--model", b, "--audio", audio, "-o", out, "--points", points)
    assert proc.returncode == 0, proc.stderr
    aligned = files.weights(torch.load(out, weights_only=True), arch)
    assert all(torch.equal(aligned[n], weights[n]) for n in weights), [n for n in weights if not torch.equal(aligned[n], weights[n])]
    # what align wrote computes B's function, through s3prl's expert
    if "residual" not in points:
        assert max_diff(_expert_states(arch, out, wav), _expert_states(arch, b, wav)) < 1e-5
    info = speechft("info", out)
    assert "speechft align" in info.stdout and "units moved" in info.stdout


def test_aligned_file_keeps_bs_function(audio, tmp_path, wav):
    a = _write(randomised("hubert", 0), tmp_path / "a.pt")
    b = _write(randomised("hubert", 1), tmp_path / "b.pt")
    out = tmp_path / "b_al.pt"
    assert speechft("align", "--reference", a, "--model", b, "--audio", audio, "-o", out).returncode == 0
    aligned = files.weights(torch.load(out, weights_only=True), "hubert")
    original = files.weights(torch.load(b, weights_only=True), "hubert")
    assert sum(not torch.equal(aligned[n], original[n]) for n in original) > 20  # it did permute
    assert max_diff(_expert_states("hubert", out, wav), _expert_states("hubert", b, wav)) < 1e-5


def test_finetuned_aligns_to_identity_and_merge_is_plain(audio, tmp_path):
    from tests.test_merge_cli import finetune

    a = _write(randomised("hubert", 0), tmp_path / "a.pt")
    ft = finetune(a, tmp_path / "ft.pt", seed=3, scale=1e-3)
    out = tmp_path / "ft_al.pt"
    proc = speechft("align", "--reference", a, "--model", ft, "--audio", audio, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert " 0/" in proc.stdout and all(" 0/" in line for line in proc.stdout.splitlines()[1:])
    plain, aligned = tmp_path / "plain.pt", tmp_path / "aligned.pt"
    assert speechft("merge", "--base", a, "--finetuned", ft, "--alpha", "0.5", "-o", plain).returncode == 0
    assert speechft("merge", "--base", a, "--finetuned", ft, "--alpha", "0.5", "-o", aligned,
                    "--align-audio", audio).returncode == 0
    p, q = (files.weights(torch.load(x, weights_only=True), "hubert") for x in (plain, aligned))
    assert all(torch.equal(p[n], q[n]) for n in p)
    assert "aligned to θ0 before merging" in speechft("info", aligned).stdout


def test_endpoints_and_repair(audio, tmp_path, wav):
    from speechft_upstream.merge import repair

    state_a = randomised("hubert", 0)
    a = _write(state_a, tmp_path / "a.pt")
    b = _write(randomised("hubert", 1), tmp_path / "b.pt")
    b_al = tmp_path / "b_al.pt"
    assert speechft("align", "--reference", a, "--model", b, "--audio", audio, "-o", b_al).returncode == 0
    for flags, name in (([], "m.pt"), (["--repair-audio", audio], "r.pt")):
        proc = speechft("merge", "--base", a, "--finetuned", b, "--alpha", "0,0.5,1", "-o", tmp_path / name,
                        "--align-audio", audio, *flags)
        assert proc.returncode == 0, proc.stderr
    load = lambda p: files.weights(torch.load(p, weights_only=True), "hubert")  # noqa: E731
    wa = load(a)
    for prefix in ("m", "r"):
        w0 = load(tmp_path / f"{prefix}_alpha0.pt")
        assert all(torch.equal(w0[n], wa[n]) for n in wa)  # weight 0 on θ′: A itself
        # weight 1: B's function (B aligned; the pre-training heads are θ0's, unused by the features)
        assert max_diff(_expert_states("hubert", tmp_path / f"{prefix}_alpha1.pt", wav),
                        _expert_states("hubert", b, wav)) < 1e-5
    # REPAIR reaches the interpolated statistics at every point it resets
    wb = load(b_al)
    targets = [repair.measure(state_a, "hubert", w, audio) for w in (wa, wb)]
    got = repair.measure(state_a, "hubert", load(tmp_path / "r_alpha0.5.pt"), audio)
    plain = repair.measure(state_a, "hubert", load(tmp_path / "m_alpha0.5.pt"), audio)
    assert set(got) == {"cnnnorm.0", "attn.0", "ffnpre.0", "attn.1", "ffnpre.1"}
    for point, (mean, std) in got.items():
        t_mean = 0.5 * targets[0][point][0] + 0.5 * targets[1][point][0]
        t_std = 0.5 * targets[0][point][1] + 0.5 * targets[1][point][1]
        assert torch.allclose(mean, t_mean, atol=1e-4) and torch.allclose(std, t_std, rtol=1e-4, atol=1e-5), point
    assert any(not torch.allclose(plain[p][1], got[p][1], rtol=1e-2) for p in got)  # plain merge misses them
    assert "REPAIR" in speechft("info", tmp_path / "r_alpha0.5.pt").stdout


# --- bad input: one line, no output -------------------------------------------------------------

def _fails(args, out, *expected):
    proc = speechft(*args)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert len(lines) == 1 and all(e in lines[0] for e in expected), proc.stderr
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def test_bad_inputs(audio, tmp_path):
    state = randomised("hubert", 0)
    a = _write(state, tmp_path / "a.pt")
    out = tmp_path / "out.pt"
    w2v = _write(tiny.make_tiny("wav2vec2"), tmp_path / "w2v.pt", arch="wav2vec2")
    _fails(["align", "--reference", a, "--model", w2v, "--audio", audio, "-o", out], out, "wav2vec2", "hubert")
    weights = dict(files.weights(state, "hubert"))
    weights["encoder.layers.0.fc1.weight"] = torch.zeros(64, 48)
    other = _write(state, tmp_path / "other.pt", weights)
    _fails(["align", "--reference", a, "--model", other, "--audio", audio, "-o", out], out, "fc1.weight", "shape")
    short = tmp_path / "short"
    short.mkdir()
    soundfile.write(short / "x.wav", np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1, 16000)
    _fails(["align", "--reference", a, "--model", a, "--audio", short, "-o", out], out, "frames", "units")
    weights = dict(files.weights(state, "hubert"))
    weights["encoder.layers.0.fc1.weight"] = weights["encoder.layers.0.fc1.weight"] * 1e38
    blows = _write(state, tmp_path / "blows.pt", weights)
    _fails(["align", "--reference", a, "--model", blows, "--audio", audio, "-o", out], out, "NaN or Inf", "blows.pt")
    wavlm = _write(tiny.make_tiny("wavlm"), tmp_path / "wavlm.pt", arch="wavlm")
    _fails(["align", "--reference", wavlm, "--model", wavlm, "--audio", audio, "-o", out], out, "WavLM", "attn")
    _fails(["align", "--reference", a, "--model", a, "--audio", audio, "-o", out, "--points", "cnn,heads"], out, "heads")
    decoar = tmp_path / "decoar2.pt"
    files.save_atomic({"model": {"encoder.weight": torch.randn(4, 4)}}, decoar)
    _fails(["align", "--reference", decoar, "--model", decoar, "--audio", audio, "-o", out], out, "decoar2")
    _fails(["merge", "--base", a, "--finetuned", a, "--alpha", "0.5", "-o", out, "--repair-audio", audio,
            "--method", "ties"], out, "linear")


def test_zero_variance_units_are_named(audio, tmp_path):
    state = randomised("hubert", 0)
    weights = dict(files.weights(state, "hubert"))
    for name in ("encoder.layers.1.fc1.weight", "encoder.layers.1.fc1.bias"):
        weights[name] = weights[name].clone()
        weights[name][5] = 0.0  # unit 5 of layer 1's FFN: constant GELU(0) = 0
    a = _write(state, tmp_path / "a.pt", weights)
    out = tmp_path / "out.pt"
    proc = speechft("align", "--reference", a, "--model", a, "--audio", audio, "-o", out)
    assert proc.returncode == 0, proc.stderr
    warning = [ln for ln in proc.stderr.splitlines() if "warning" in ln and "ffn.1" in ln]
    assert warning and "units 5 " in warning[0], proc.stderr
    aligned = files.weights(torch.load(out, weights_only=True), "hubert")
    assert all(torch.equal(aligned[n], weights[n]) for n in weights)
