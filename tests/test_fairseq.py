"""fairseq itself (opt-in, ./run.sh setup --fairseq): it imports on Python 3.11 with patches/fairseq,
and s3prl's own fairseq path converts the tiny fairseq checkpoints exactly as `speechft convert`."""

import argparse
import os
import subprocess
from pathlib import Path

import pytest
import torch

from speechft_upstream import cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FAIRSEQ_PY = REPO / ".venv-fairseq" / "bin" / "python"

# Runs in .venv-fairseq: s3prl's converter (through fairseq's load_checkpoint_to_cpu), as
# hubert_custom(ckpt, fairseq=True) / wav2vec2_custom(ckpt, fairseq=True) call it.
S3PRL_SIDE = r"""
import sys, warnings
warnings.filterwarnings("ignore")
import fairseq, fairseq.checkpoint_utils
from s3prl.upstream.hubert.hubconf import hubert_custom
from s3prl.upstream.wav2vec2.hubconf import wav2vec2_custom
custom = {"hubert": hubert_custom, "wav2vec2": wav2vec2_custom}
for spec in sys.argv[1:]:
    arch, path = spec.split("=", 1)
    custom[arch](path, fairseq=True)  # writes <stem>.converted.pt beside it, then loads it
print("fairseq", fairseq.__version__)
"""


@pytest.fixture(scope="module")
def fairseq_py():
    if not FAIRSEQ_PY.exists():
        pytest.skip("fairseq venv not set up: run ./run.sh setup --fairseq (builds .venv-fairseq)")
    proc = subprocess.run([str(FAIRSEQ_PY), "-c", "import fairseq; print(fairseq.__version__)"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f".venv-fairseq cannot import fairseq: {proc.stderr.strip().splitlines()[-1:]}")
    assert proc.stdout.strip() == "0.12.2"
    return FAIRSEQ_PY


def _same(a, b, where=""):
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b) or set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def _old_args_file(src, dst):
    """A pre-hydra fairseq file ({'args': Namespace}) with the tiny wav2vec 2.0 of src."""
    from speechft_upstream.checkpoints import convert

    state = convert.convert_state(convert.read(src), src)[1]
    args = argparse.Namespace(**{k: v for k, v in {**state["task_cfg"], **state["model_cfg"]}.items()
                                 if k != "_name"})
    args.arch, args.task, args.criterion, args.optimizer = "wav2vec2", "audio_pretraining", "wav2vec", "adam"
    args.lr, args.latent_temp = 0.0005, "(2, 0.5, 0.999995)"
    torch.save({"args": args, "model": state["model_weight"], "optimizer_history": [
        {"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
         "lr_scheduler_state": {"best": None}, "num_updates": 0}], "extra_state": {}}, dst)


def test_s3prl_fairseq_path_equals_speechft_convert(fairseq_py, tmp_path):
    cases = {}
    for arch in ("hubert", "wav2vec2"):
        src = tmp_path / f"{arch}.pt"
        assert cli.main(["make-tiny", "--arch", arch, "--format", "fairseq", "--seed", "5", "-o", str(src)]) == 0
        cases[arch] = src
    _old_args_file(cases["wav2vec2"], tmp_path / "old_w2v.pt")
    cases["old_w2v"] = tmp_path / "old_w2v.pt"

    env = dict(os.environ)
    # fairseq's own torch.load predates weights_only; these are files the test just wrote.
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    specs = [f"{'wav2vec2' if k == 'old_w2v' else k}={p}" for k, p in cases.items()]
    proc = subprocess.run([str(fairseq_py), "-c", S3PRL_SIDE, *specs], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "fairseq 0.12.2" in proc.stdout

    for name, src in cases.items():
        ours = tmp_path / f"{name}.speechft.pt"
        assert cli.main(["convert", str(src), "-o", str(ours)]) == 0
        theirs = torch.load(src.with_suffix(".converted.pt"), weights_only=True)
        _same(torch.load(ours, weights_only=True), theirs, name)
