"""Two processes on CPU (gloo) through torchrun and s3prl's unmodified runner."""

import sys

import torch

from speechft_upstream.checkpoints import files
from tests.conftest import EXAMPLE_CONFIG, assert_ok, run_py


def test_torchrun_two_processes_gloo(tmp_path, tiny_hubert):
    exp = tmp_path / "exp"
    settings = tmp_path / "speechft.yaml"
    settings.write_text("beta: 0.5\n")
    proc = run_py(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                   "-m", "speechft_upstream.launch",
                   "-m", "train", "-u", "speechft_hubert", "-k", tiny_hubert, "-d", "example",
                   "-c", EXAMPLE_CONFIG, "-f", "-g", settings, "--device", "cpu", "-p", exp],
                  env={"OMP_NUM_THREADS": "1"})
    assert_ok(proc)
    states = files.load(exp / "states-6.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["WorldSize"] == 2
    assert states["Args"].local_rank is not None
    theta0 = files.weights(*files.read_encoder(tiny_hubert))
    trained = {k[len("model."):]: v for k, v in states["Upstream"].items()}
    changed = [k for k in theta0 if not torch.equal(theta0[k], trained[k])]
    assert changed and not any(k.startswith("feature_extractor.") for k in changed)
    mid = files.load(exp / "states-3.ckpt", allowed=files.RUNNER_ALLOWED)
    assert all(torch.equal(theta0[k], mid["Upstream"]["model." + k]) for k in theta0)  # head only to step 3


def test_launch_outside_torchrun_is_one_line():
    proc = run_py(["-m", "speechft_upstream.launch", "-m", "train"], env={"LOCAL_RANK": ""})
    assert proc.returncode == 2 or "LOCAL_RANK" in proc.stderr
