"""Startup hook fixes for s3prl 0.4.18's diarization (SD) and quesst14_dtw (QbE) experts."""

import collections
import json

import numpy as np
import torch

from tests.conftest import REPO, assert_ok, run_py

PROBE = REPO / "tests" / "sd_qbe_experts_probe.py"


def test_hook_fixes_both_experts():
    proc = run_py([PROBE])
    assert_ok(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["hooked"] and out["frames"] == 14  # 10 + 4 real frames, not 2 x 10
    assert out["qbe_workers"] == out["affinity"] == 1  # the probe pins itself to one CPU


def test_stock_diarization_stores_the_padding(tmp_path):
    """What the hook undoes: s3prl's own forward stores both chunks padded to the longer one."""
    import h5py
    from s3prl.downstream.diarization.expert import DownstreamExpert

    config = {"datarc": {"chunk_size": 10, "num_speakers": 2, "frame_shift": None},
              "loaderrc": {"train_batchsize": 1, "eval_batchsize": 1}, "scorerc": {"save_predictions": True},
              "modelrc": {"rnn_layers": 1, "hidden_size": 8}}
    expert = DownstreamExpert(upstream_dim=4, upstream_rate=320, downstream_expert=config, expdir=str(tmp_path))
    labels = [np.ones((10, 2), dtype=np.float32), np.ones((4, 2), dtype=np.float32)]
    stock = DownstreamExpert.forward.__wrapped__
    stock(expert, "test", [torch.randn(10, 4), torch.randn(4, 4)], labels, [10, 4], "rec", collections.defaultdict(list))
    with h5py.File(tmp_path / "scoring" / "predictions" / "rec.h5", "r") as handle:
        assert handle["T_hat"].shape == (20, 2)
    expert.forward("test", [torch.randn(10, 4), torch.randn(4, 4)], labels, [10, 4], "rec", collections.defaultdict(list))
    with h5py.File(tmp_path / "scoring" / "predictions" / "rec.h5", "r") as handle:
        assert handle["T_hat"].shape == (14, 2)
