"""`speechft info`: what a checkpoint is, and the provenance a merge wrote into it."""

import argparse
import contextlib
import io

import torch

from speechft_upstream import cli


def info(path):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["info", str(path)])
    return code, out.getvalue(), err.getvalue()


def test_plain_converted_checkpoint(tiny_hubert):
    code, out, _ = info(tiny_hubert)
    assert code == 0
    assert f"{tiny_hubert}: hubert checkpoint (s3prl converted format)" in out
    assert "transformer layers: 2" in out
    assert "provenance: none (not written by speechft merge)" in out


def test_runner_checkpoint(tmp_path, tiny_hubert):
    weights = torch.load(tiny_hubert, weights_only=True)["model_weight"]
    path = tmp_path / "states-9.ckpt"
    torch.save({"Upstream": {"model." + k: v for k, v in weights.items()}, "Downstream": {}, "Step": 9,
                "Args": argparse.Namespace(upstream="speechft_hubert", downstream="example")}, path)
    code, out, _ = info(path)
    assert code == 0
    assert "s3prl runner checkpoint (step 9)" in out
    assert "upstream: speechft_hubert  downstream: example" in out
    assert "usable as θ′ in speechft merge" in out


def test_merge_of_a_merge_shows_both(tmp_path, tiny_dir):
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    wavlm, other = tiny_dir / "wavlm.pt", tmp_path / "other.pt"
    state = torch.load(wavlm, weights_only=True)
    state["model"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, other)
    assert cli.main(["merge", "--base", str(wavlm), "--finetuned", str(other), "--alpha", "0.5",
                     "-o", str(first)]) == 0
    assert cli.main(["merge", "--base", str(first), "--finetuned", str(other), "--method", "ties",
                     "--alpha", "1", "-o", str(second)]) == 0
    code, out, _ = info(second)
    assert code == 0
    assert "method: ties  α: 1.0" in out and "density: 0.2" in out
    assert "θ0 was itself merged:" in out and "method: linear  α: 0.5" in out


def test_refusals(tmp_path):
    code, _, err = info(tmp_path / "missing.pt")
    assert code == 1 and err == f"speechft: error: {tmp_path / 'missing.pt'}: no such file\n"
    (tmp_path / "text.pt").write_text("not a checkpoint")
    code, _, err = info(tmp_path / "text.pt")
    assert code == 1 and err.startswith(f"speechft: error: {tmp_path / 'text.pt'}: not a PyTorch checkpoint")
