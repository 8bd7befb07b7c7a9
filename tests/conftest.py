"""Shared fixtures: tiny models written to disk, an isolated registry, a runner launcher."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIG = REPO / "downstream_recipes" / "configs" / "example.yaml"


@pytest.fixture(autouse=True)
def isolated_registry(tmp_path, monkeypatch):
    """Every test gets its own registry file, in-process and in the subprocesses it starts."""
    path = tmp_path / "registry.json"
    monkeypatch.setenv("SPEECHFT_REGISTRY", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from speechft_upstream.checkpoints import tiny

    folder = tmp_path_factory.mktemp("tiny")
    for arch in tiny.TINY_ARCHS:
        tiny.write_tiny(arch, folder / f"{arch}.pt", seed=0)
    return folder


@pytest.fixture(scope="session")
def tiny_hubert(tiny_dir):
    return tiny_dir / "hubert.pt"


def run_py(args, cwd=None, env=None, timeout=600):
    """Run the venv's Python with ``args``; returns the CompletedProcess (text, both streams)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=full_env, text=True,
        capture_output=True, timeout=timeout,
    )


def runner(args, **kwargs):
    """s3prl's unmodified downstream runner, as users start it."""
    return run_py(["-m", "s3prl.run_downstream", *args], **kwargs)


def train_args(upstream, expdir, ckpt=None, extra=()):
    args = ["-m", "train", "-u", upstream, "-d", "example", "-c", EXAMPLE_CONFIG,
            "-f", "--device", "cpu", "-p", expdir, *extra]
    if ckpt is not None:
        args += ["-k", ckpt]
    return args


def assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def error_lines(proc):
    """The speechft error lines of a failed run (the rest is s3prl's own chatter)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("speechft: error:")]


def corpus_digest(folder):
    """sha256 over a corpus folder's files; SD's Kaldi lists hold absolute paths, compared relative."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            data = path.read_bytes()
            if path.name == "wav.scp":
                data = data.replace(str(Path(folder).resolve()).encode(), b"OUT")
            h.update(data)
    return h.hexdigest()


@pytest.fixture(scope="session")
def benchmark_smoke(tmp_path_factory):
    """`speechft benchmark --smoke` (PR, KS, IC) run twice in one --work: the second reuses every
    stage. Session-wide, so that test_benchmark_tasks.py adds its tasks to the same --work."""
    import time

    root = tmp_path_factory.mktemp("benchmark")
    out, work = root / "results", root / "work"
    args = ["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--out", out, "--work", work]
    env = {"OMP_NUM_THREADS": "1"}
    started = time.time()
    first = run_py(args, env=env, timeout=900)
    first_seconds = time.time() - started
    assert_ok(first)
    started = time.time()
    second = run_py(args, env=env, timeout=300)
    second_seconds = time.time() - started
    assert_ok(second)
    return {"out": out, "work": work, "first": first, "second": second,
            "first_seconds": first_seconds, "second_seconds": second_seconds}
