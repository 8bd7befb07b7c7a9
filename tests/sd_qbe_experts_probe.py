"""Run as a script: build s3prl's diarization and quesst14_dtw experts, print what the fixes change.

Prints the frames stored for a test recording of two chunks (10 + 4 frames, padded to 10) and
whether the QbE expert's DTW process count follows the CPU affinity mask. Used by
tests/test_compat_sd_qbe.py (startup hook) and tests/test_patches.py (patched source, hook off).
"""

import collections
import json
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
from s3prl.downstream.diarization.expert import DownstreamExpert as Diarization
from s3prl.downstream.quesst14_dtw.expert import DownstreamExpert as Quesst


def main():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one CPU: affinity != cpu_count
    out = {"hooked": bool(getattr(Diarization.forward, "_speechft", False))}
    with tempfile.TemporaryDirectory() as exp:
        config = {"datarc": {"chunk_size": 10, "num_speakers": 2, "frame_shift": None},
                  "loaderrc": {"train_batchsize": 1, "eval_batchsize": 1}, "scorerc": {"save_predictions": True},
                  "modelrc": {"rnn_layers": 1, "hidden_size": 8}}
        expert = Diarization(upstream_dim=4, upstream_rate=320, downstream_expert=config, expdir=exp)
        labels = [np.ones((10, 2), dtype=np.float32), np.ones((4, 2), dtype=np.float32)]
        expert.forward("test", [torch.randn(10, 4), torch.randn(4, 4)], labels, [10, 4], "rec",
                       collections.defaultdict(list))
        with h5py.File(os.path.join(exp, "scoring", "predictions", "rec.h5"), "r") as handle:
            out["frames"] = int(handle["T_hat"].shape[0])
        qbe = Quesst(upstream_dim=4, expdir=exp, downstream_expert={
            "max_workers": None, "feature_normalization": True, "silence_frame": None, "datarc": {},
            "dtwrc": {"dist_method": "cosine_exp", "step_pattern": "asymmetric", "subsequence": True}})
        out["qbe_workers"] = qbe.max_workers
        out["affinity"] = len(os.sched_getaffinity(0))
        out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
