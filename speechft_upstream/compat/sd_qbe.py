"""s3prl 0.4.18's diarization (SD) and quesst14_dtw (QbE) experts: two fixes, each a no-op when
the expert already behaves.

- diarization, test split: each recording is cut into chunks of ``chunk_size`` frames and the
  chunks are padded to the longest before the head runs; ``forward`` stacks the padded
  posteriors into ``scoring/predictions/<rec>.h5``. Every chunk but the last is full, so the
  padding is a run of made-up frames after the recording's end, which make_rttm.py turns into
  speech after the end and DER counts as false alarm (with 160-sample labels a 30 s Libri2Mix
  mixture gets 10 s of them). The wrapper keeps the first sum(lengths) frames, the real ones.
- quesst14_dtw: an empty ``max_workers`` (its config's default) reaches
  ``ProcessPoolExecutor(max_workers=None)``, which on Python < 3.13 starts ``os.cpu_count()``
  DTW processes: every core of the machine, not the cores this job may use (Slurm, taskset,
  containers). The wrapper uses the CPUs in the process's affinity mask instead.
"""

import functools
import os


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def install_diarization(module):
    cls = module.DownstreamExpert
    if getattr(cls.forward, "_speechft", False):
        return
    original = cls.forward

    @functools.wraps(original)
    def forward(self, mode, features, labels, lengths, rec_id, records, **kwargs):
        loss = original(self, mode, features, labels, lengths, rec_id, records, **kwargs)
        if mode == "test" and self.save_predictions:
            _trim_prediction(os.path.join(self.score_dir, "predictions", f"{rec_id}.h5"), int(sum(lengths)))
        return loss

    forward._speechft = True
    cls.forward = forward


def _trim_prediction(path, frames):
    import h5py

    with h5py.File(path, "r") as handle:
        if handle["T_hat"].shape[0] <= frames:
            return
        kept = handle["T_hat"][:frames]
    tmp = f"{path}.tmp"
    with h5py.File(tmp, "w") as handle:
        handle.create_dataset("T_hat", data=kept)
    os.replace(tmp, path)


def install_quesst14(module):
    cls = module.DownstreamExpert
    if getattr(cls.__init__, "_speechft", False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.max_workers is None:
            self.max_workers = usable_cpus()

    __init__._speechft = True
    cls.__init__ = __init__
