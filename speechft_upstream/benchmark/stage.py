"""Pieces every benchmark stage uses: console output, running commands, and the stage cache."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from speechft_upstream.checkpoints import atomic
from speechft_upstream.errors import SpeechFTError


def say(message=""):
    print(message, file=sys.stderr, flush=True)


def header(index, total, title):
    say("")
    say(f"==== [{index}/{total}] {title} " + "=" * max(4, 70 - len(title)))


def _strip(value):
    """``value`` without the run-time entries (``_seconds``, ``_reused``) stages add to their outputs."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def stage_key(params):
    return hashlib.sha256(json.dumps(_strip(params), sort_keys=True, default=str).encode()).hexdigest()[:16]


THREAD_SETTINGS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def job_env():
    """What every command gets on top of the environment it starts in (also sent with Slurm jobs)."""
    env = dict(THREAD_SETTINGS)
    env["PYTHON"] = sys.executable  # the recipes' interpreter
    env["PYTHONWARNINGS"] = os.environ.get("PYTHONWARNINGS", "ignore::FutureWarning,ignore::UserWarning")
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _env(extra=None):
    env = dict(os.environ)
    # Forced, not defaulted: the thread count changes the floating-point summation order and so
    # the numbers; one thread per run makes a run repeatable whatever the caller's shell sets.
    env.update(THREAD_SETTINGS)
    env["PYTHON"] = sys.executable  # the recipes' interpreter
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::UserWarning")
    env.update(extra or {})
    return env


def speechft_cmd(*args):
    return [sys.executable, "-m", "speechft_upstream.cli", *map(str, args)]


# Where run_cmd sends commands: None runs them here; executor.py sets a GPU pool or Slurm.
EXECUTOR = None


def run_cmd(cmd, log=None, stream=True, cwd=None):
    """Run ``cmd``; the output goes to the terminal (stream) and/or ``log``. Raises on failure."""
    if EXECUTOR is not None:
        return EXECUTOR.run([str(c) for c in cmd], log=log, stream=stream, cwd=cwd)
    return run_local(cmd, log, stream, cwd)


def run_local(cmd, log=None, stream=True, cwd=None, env=None):
    """run_cmd on this machine; ``env``: more environment for this command (e.g. its GPU)."""
    cmd = [str(c) for c in cmd]
    if log is None and stream:
        proc = subprocess.run(cmd, env=_env(env), cwd=cwd)
        if proc.returncode:
            raise SpeechFTError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}")
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8", errors="replace") as handle:
        proc = subprocess.Popen(cmd, env=_env(env), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            handle.write(line)
            if stream:
                sys.stderr.write(line)
        proc.wait()
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise SpeechFTError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                            f"--- last lines of {log} ---\n{tail}")


class Stage:
    """A cached stage: ``folder/stage.json`` holds the key of its parameters and its outputs."""

    def __init__(self, folder, params):
        self.folder = Path(folder)
        self.params = params
        self.key = stage_key(params)
        self.marker = self.folder / "stage.json"

    def cached(self):
        """The stored outputs when the stage is done with these parameters and its files exist."""
        if not self.marker.is_file():
            return None
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("key") != self.key:
            return None
        outputs = data.get("outputs", {})
        for path in data.get("files", []):
            if not (self.folder / path).exists():
                return None
        outputs["_seconds"] = data.get("seconds", 0.0)
        outputs["_reused"] = True
        return outputs

    def start(self):
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self._started = time.time()

    def finish(self, outputs, paths):
        seconds = time.time() - self._started
        data = {"key": self.key, "params": self.params, "outputs": outputs, "files": list(paths),
                "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic.write_json_atomic(data, self.marker, indent=2, default=str)
        return dict(outputs, _seconds=seconds, _reused=False)
