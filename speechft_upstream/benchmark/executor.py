"""Where the benchmark's commands run: here (default), here with one GPU per run (--gpus N), or
as Slurm jobs through submitit (--slurm).

Every stage sends its recipe / speechft commands through ``stage.run_cmd``; ``use(executor)``
points that at one of the executors below for the length of a benchmark run. The driver process
keeps the stage cache either way: a stage is done when the call that ran its command returns,
so dependencies follow from the order the driver waits in, and an interrupted stage (no
stage.json) is redone by the next run.
"""

import contextlib
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path

from speechft_upstream.benchmark import stage as stage_module
from speechft_upstream.benchmark.stage import say
from speechft_upstream.errors import SpeechFTError

# Tests only: submitit's cluster (e.g. "local", its stand-in for Slurm on one machine).
CLUSTER_ENV = "SPEECHFT_SUBMITIT_CLUSTER"


class DevicePool:
    """GPU ids handed out one per run: a run holds its id until it ends, failed or not."""

    def __init__(self, ids):
        self.ids = [str(i) for i in ids]
        self._free = queue.Queue()
        for i in self.ids:
            self._free.put(i)

    @contextlib.contextmanager
    def hold(self):
        device = self._free.get()
        try:
            yield device
        finally:
            self._free.put(device)


def visible_gpus(count):
    """The first ``count`` visible CUDA device ids (as CUDA_VISIBLE_DEVICES names them); refuses
    with one line when fewer are visible."""
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < count:
        raise SpeechFTError(f"--gpus {count}: only {visible} CUDA device(s) visible here")
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in names.split(",") if i.strip()] if names else [str(i) for i in range(visible)]
    return ids[:count]


class GpuPool:
    """Runs on this machine, each in CUDA_VISIBLE_DEVICES=<one id of the pool>."""

    kind = "gpus"

    def __init__(self, ids):
        self.pool = DevicePool(ids)

    def run(self, cmd, log=None, stream=True, cwd=None):
        with self.pool.hold() as device:
            stage_module.run_local(cmd, log, stream, cwd, env={"CUDA_VISIBLE_DEVICES": device})


def _job(cmd, log, cwd, env):
    """The body of one Slurm job (runs on the compute node): the command, its output in ``log``
    (else the job's own stdout); returns the exit status for the driver to report."""
    full = dict(os.environ)
    full.update(env)
    if log is None:
        return subprocess.run(cmd, cwd=cwd, env=full).returncode
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8", errors="replace") as handle:
        return subprocess.run(cmd, cwd=cwd, env=full, stdout=handle, stderr=subprocess.STDOUT).returncode


def _describe(cmd):
    """A short name for a command: the recipe and mode, or the speechft subcommand."""
    for i, part in enumerate(cmd):
        if part.endswith(".sh"):
            return f"{Path(part).stem} {cmd[i + 1]}"
        if part == "speechft_upstream.cli":
            return f"speechft {cmd[i + 1]}"
    return Path(cmd[0]).name


class Slurm:
    """One Slurm job per command, submitted with submitit; ``run`` waits for it."""

    kind = "slurm"

    def __init__(self, folder, partition=None, time_min=1440, gpus_per_job=1, cpus_per_job=None, extra=None):
        try:
            import submitit
        except ImportError:
            raise SpeechFTError("--slurm: needs the submitit package (pip install submitit==1.5.4)") from None
        self.folder = Path(folder)
        cluster = os.environ.get(CLUSTER_ENV) or "slurm"
        self.executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster)
        params = {"timeout_min": time_min, "gpus_per_node": gpus_per_job, "nodes": 1, "tasks_per_node": 1}
        if cpus_per_job:
            params["cpus_per_task"] = cpus_per_job
        if partition:
            params["slurm_partition"] = partition
        if extra:
            params["slurm_additional_parameters"] = extra
        self.executor.update_parameters(**params)
        self.cluster = cluster
        self._lock = threading.Lock()  # submitit's executor is not meant for concurrent submits
        self._running = set()

    def run(self, cmd, log=None, stream=True, cwd=None):
        name = _describe(cmd)
        env = stage_module.job_env()
        with self._lock:
            self.executor.update_parameters(name=f"speechft-{name.replace(' ', '-')}")
            job = self.executor.submit(_job, cmd, str(log) if log else None, str(cwd) if cwd else None, env)
            self._running.add(job)
        job_log = job.paths.stdout
        if stream:
            say(f"[{self.cluster}] {name}: job {job.job_id} (job log {job_log}{', output ' + str(log) if log else ''})")
        try:
            code = job.result()
        except Exception as err:  # the job itself failed; the details are in its log
            from submitit.core.utils import UncompletedJobError

            why = ("ended without a result: killed, out of time or memory, or its node failed"
                   if isinstance(err, UncompletedJobError) else f"{type(err).__name__} in the job")
            raise SpeechFTError(f"{name}: {self.cluster} job {job.job_id} failed ({why}); log: {job.paths.stderr}") \
                from None
        finally:
            with self._lock:
                self._running.discard(job)
        if code:
            raise SpeechFTError(f"{name}: {self.cluster} job {job.job_id} exited {code}; log: {log or job_log}")

    def cancel_all(self):
        """Cancel the jobs still running (the driver was interrupted): their stages, left without
        stage.json, are redone by the next run, and no old job writes into the new one's folder."""
        with self._lock:
            jobs = list(self._running)
        for job in jobs:
            say(f"[{self.cluster}] cancelling job {job.job_id}")
            job.cancel(check=False)


def parse_extra(values):
    """--slurm-extra KEY=VALUE (repeatable) -> {KEY: VALUE} for sbatch's --KEY=VALUE."""
    out = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpeechFTError(f"--slurm-extra: expected KEY=VALUE (sbatch's --KEY=VALUE), got '{item}'")
        out[key.strip().lstrip("-").replace("-", "_")] = value
    return out


@contextlib.contextmanager
def use(executor):
    """run_cmd goes through ``executor`` (None: here) inside the block."""
    before = stage_module.EXECUTOR
    stage_module.EXECUTOR = executor
    handlers = {}
    if hasattr(executor, "cancel_all") and threading.current_thread() is threading.main_thread():
        # Ctrl-C / kill: cancel the jobs first, so the threads waiting for them end, then stop as usual
        def interrupted(signum, frame):
            executor.cancel_all()
            previous = handlers[signum]
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt

        for signum in (signal.SIGINT, signal.SIGTERM):
            handlers[signum] = signal.signal(signum, interrupted)
    try:
        yield executor
    finally:
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
        stage_module.EXECUTOR = before
