"""`speechft merge --method X` end to end for slerp, model_stock, breadcrumbs, della, tsv, iso and
regmean on tiny models: real checkpoints written and read back, real audio files for RegMean."""

import os

import numpy as np
import pytest
import soundfile
import torch

from speechft_upstream.merge import methods, methods_regmean
from tests.conftest import assert_ok
from tests.test_merge_cli import finetune, load_weights, speechft

NAME = "encoder.layers.1.fc1.weight"
HEAD = "final_proj.weight"


@pytest.fixture(scope="module")
def thetas(tmp_path_factory, tiny_hubert):
    """Two θ′ that share part of their fine-tuning direction (as two runs from one θ0 do), so
    Model Stock's angle is acute; the CNN stays frozen."""
    folder = tmp_path_factory.mktemp("thetas")
    common = load_weights(finetune(tiny_hubert, folder / "common.pt", seed=9, scale=5e-2))
    paths = []
    for i in (1, 2):
        path = finetune(tiny_hubert, folder / f"ft{i}.pt", seed=i, scale=5e-2)
        state = torch.load(path, weights_only=True)
        for name, value in state["model_weight"].items():
            if value.is_floating_point():
                value += common[name] - load_weights(tiny_hubert)[name]
        torch.save(state, path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Unlabelled audio as users have it: nested folders, wav and flac, 16 kHz and 8 kHz."""
    folder = tmp_path_factory.mktemp("audio")
    (folder / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        t = np.arange(8000 * (i + 1)) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.05 * rng.standard_normal(len(t))
        soundfile.write(folder / "sub" / f"a{i}.wav", wav.astype(np.float32), 16000)
    soundfile.write(folder / "b.flac", (0.1 * rng.standard_normal(6000)).astype(np.float32), 8000)
    (folder / "notes.txt").write_text("not audio")
    return folder


CASES = {
    "slerp": (1, ["--alpha", "0.3"], {}),
    "model_stock": (2, ["--alpha", "1"], {}),
    "breadcrumbs": (2, ["--alpha", "0.5", "--density", "0.3", "--gamma", "0.05", "--weights", "2,1"],
                    dict(density=0.3, gamma=0.05, weights=[2.0, 1.0])),
    "della": (2, ["--alpha", "0.8", "--density", "0.4", "--epsilon", "0.2", "--seed", "5"],
              dict(density=0.4, epsilon=0.2, seed=5)),
    "tsv": (2, ["--alpha", "1"], {}),
    "iso": (2, ["--alpha", "0.7"], {}),
}


@pytest.mark.parametrize("method", list(CASES))
def test_method_through_cli(method, tmp_path, tiny_hubert, thetas):
    n, args, options = CASES[method]
    out = tmp_path / "m.pt"
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", *thetas[:n], "--method", method, *args, "-o", out))
    b, fts, got = load_weights(tiny_hubert), [load_weights(t) for t in thetas[:n]], load_weights(out)
    alpha = float(args[args.index("--alpha") + 1])
    for name in (NAME, "encoder.layers.0.self_attn.k_proj.bias"):
        (want,) = methods.merge(method, b[name], [f[name] for f in fts], [alpha], name=name, **options)
        if method in ("tsv", "iso"):  # LAPACK's SVD rounds differently with the merge's one thread
            assert torch.allclose(got[name], want, atol=1e-6), name
        else:
            assert torch.equal(got[name], want), name
        assert not torch.equal(got[name], b[name])
    assert torch.equal(got[HEAD], b[HEAD])  # pre-training head kept from θ0


def test_regmean_refuses_wavlm(tmp_path, tiny_dir, audio):
    wavlm = tiny_dir / "wavlm.pt"
    proc = speechft("merge", "--base", wavlm, "--finetuned", wavlm, wavlm, "--method", "regmean", "--audio", audio,
                    "--alpha", "1", "-o", tmp_path / "m.pt")
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"speechft: error: {wavlm}: regmean supports hubert, wav2vec2 checkpoints, not wavlm (its attention's "
        "inputs to out_proj cannot be recomputed here)"]
    assert not (tmp_path / "m.pt").exists()


def test_refusals(tmp_path, tiny_hubert, thetas, audio):
    two = ["--finetuned", *map(str, thetas)]
    cases = {
        "slerp_two": (["--method", "slerp", *two], "slerp interpolates θ0 and one θ′"),
        "stock_one": (["--method", "model_stock", "--finetuned", str(thetas[0])], "at least two"),
        "tsv_weights": (["--method", "tsv", *two, "--weights", "1,2"], "weights apply to"),
        "gamma_ties": (["--method", "ties", *two, "--gamma", "0.1"], "gamma applies to breadcrumbs, not ties"),
        "gamma_range": (["--method", "breadcrumbs", *two, "--gamma", "1"], "gamma = 1 is outside [0, 1)"),
        "epsilon": (["--method", "della", *two, "--density", "0.9", "--epsilon", "0.2"],
                    "density ± epsilon (0.9 ± 0.2) must lie in (0, 1]"),
        "no_audio": (["--method", "regmean", *two], "regmean needs unlabelled audio"),
        "audio_linear": (["--finetuned", str(thetas[0]), "--audio", str(audio)], "audio applies to regmean, not linear"),
        "scale": (["--method", "regmean", *two, "--audio", str(audio), "--offdiag-scale", "1.5"],
                  "offdiag_scale = 1.5 is outside [0, 1]"),
        "audio_missing": (["--method", "regmean", *two, "--audio", str(tmp_path / "nope")], "audio folder not found"),
        "audio_empty": (["--method", "regmean", *two, "--audio", str(tmp_path)], "no audio files"),
        "too_little": (["--method", "regmean", *two, "--audio", str(audio), "--offdiag-scale", "1",
                        "--max-seconds", "0.1"], "too little audio"),
    }
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for label, (args, text) in cases.items():
        proc = speechft("merge", "--base", tiny_hubert, "--alpha", "0.5", *args, "-o", out_dir / "m.pt")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, (label, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("speechft: error: "), (label, proc.stderr)
        assert text in lines[0], (label, lines[0])
        assert os.listdir(out_dir) == [], label


def _layer_inputs(ckpt, audio, layer):
    """Layer ``layer``'s input frames on every file, from s3prl's own hidden states (no speechft hooks)."""
    from speechft_upstream.merge.regmean_stats import audio_files
    from speechft_upstream.upstream import expert

    model = expert.build("hubert", str(ckpt)).eval()
    with torch.no_grad():
        return torch.cat([model([wav])["hidden_states"][layer][0].double() for _, wav in audio_files(audio)])


def test_regmean_end_to_end(tmp_path, tiny_hubert, thetas, audio):
    out = tmp_path / "rm.pt"
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", *thetas, "--method", "regmean",
                       "--audio", audio, "--alpha", "1", "-o", out))
    b, fts, got = load_weights(tiny_hubert), [load_weights(t) for t in thetas], load_weights(out)
    # q_proj's inputs are the layer's input: RegMean of the two θ′ from s3prl's hidden states
    q = "encoder.layers.1.self_attn.q_proj.weight"
    grams = [(x.T @ x) for x in (_layer_inputs(t, audio, 1) for t in thetas)]
    want = methods_regmean.regmean(grams, [f[q] for f in fts], scale=0.9)
    assert torch.allclose(got[q].double(), want, atol=1e-5), float((got[q].double() - want).abs().max())
    mean = (fts[0][q] + fts[1][q]) / 2
    assert not torch.allclose(got[q], mean, atol=1e-4)  # it is not the plain mean
    # biases and LayerNorms: the mean; the pre-training head: θ0
    for name in ("encoder.layers.1.fc1.bias", "encoder.layers.0.self_attn_layer_norm.weight"):
        assert torch.allclose(got[name], b[name] + ((fts[0][name] - b[name]) + (fts[1][name] - b[name])) / 2)
    assert torch.equal(got[HEAD], b[HEAD])
    described = speechft("info", out).stdout
    assert "method: regmean" in described and "offdiag_scale: 0.9" in described and f"audio: {audio}" in described
    # every linear layer was solved, out_proj and fc2 (inputs recomputed inside attention / the FFN) too
    for name in ("encoder.layers.0.self_attn.out_proj.weight", "encoder.layers.1.fc2.weight", "post_extract_proj.weight"):
        assert not torch.allclose(got[name], (fts[0][name] + fts[1][name]) / 2, atol=1e-5), name

    # one θ′: RegMean gives that θ′ back (G⁻¹·G·W = W), so α = 0.4 is plain interpolation
    one = tmp_path / "one.pt"
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--method", "regmean",
                       "--audio", audio, "--alpha", "0.4", "--offdiag-scale", "1", "-o", one))
    merged = load_weights(one)
    for name in (q, "encoder.layers.0.self_attn.out_proj.weight", "encoder.layers.1.fc2.weight"):
        assert torch.allclose(merged[name], b[name] + 0.4 * (fts[0][name] - b[name]), atol=1e-5), name


def test_cli_offers_every_registered_method():
    from speechft_upstream import cli

    merge = cli.build_parser()._subparsers._group_actions[0].choices["merge"]
    action = next(a for a in merge._actions if a.dest == "method")
    assert tuple(action.choices) == methods.METHODS
