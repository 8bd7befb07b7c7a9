"""Faults: SIGKILL in fine-tuning, in `speechft benchmark` and in `speechft corpus`, then run again.

Fine-tuning, resumed with ``-e`` after a SIGKILL at a random step, is checked three ways:

1. the β boundary holds across the kill (the encoder is θ0's until step ⌊β·T⌋, trained after);
2. the checkpoint the resume starts from, states-j, is bit-identical to the uninterrupted run's
   states-j (same seed, CPU): nothing of the killed run leaks into it;
3. the resumed run ends bit-identical to resuming the *uninterrupted* run from its states-j:
   the kill costs the steps after j and nothing else.

It does NOT end bit-identical to the uninterrupted run, and cannot with s3prl 0.4.18's stock
runner, which the test uses as users do: its checkpoints store the model, optimizer, scheduler,
``Step`` and ``Epoch`` but no random-number-generator states and no position within the epoch.
On ``-e`` the runner seeds python/numpy/torch afresh from ``--seed`` and starts the saved epoch's
data loader from its first batch (runner.py ``train``: ``epoch = init_ckpt.get('Epoch', 0)``, a
new ``get_dataloader`` and ``enumerate`` from 0). So from step j + 1 on, the resumed run draws
other batches (the shuffle order and, for ``-d example``, the random audio itself come from the
global generators) and other dropout masks than the uninterrupted run did. Any resume of the
stock runner, killed or cleanly stopped, has this property; speechft keeps the runner's
checkpoint format stock (no extra keys), so it does not add generator states to it.
"""

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from tests.conftest import REPO, assert_ok, corpus_digest, run_py, runner, train_args

T, BETA = 6, 0.5
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SETTINGS = (f"config.runner.total_steps={T},,config.runner.save_step=1,,config.runner.max_keep=20,,"
            "config.runner.eval_step=100")


def popen(args, **kwargs):
    env = dict(os.environ, **ONE_THREAD)
    return subprocess.Popen([sys.executable, *map(str, args)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO, **kwargs)


def kill_group(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_for(condition, proc, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"finished before the kill (exit {proc.returncode}): {proc.stderr.read()[-2000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.01)


def states(path):
    return files.load(path, allowed=files.RUNNER_ALLOWED)


def newest_complete(exp):
    """The newest states-N.ckpt that reads back whole (a kill may cut the one being written)."""
    for path in sorted(exp.glob("states-*.ckpt"), key=lambda p: -int(p.stem.split("-")[1])):
        try:
            states(path)
            return path
        except SpeechFTError:
            continue
    raise AssertionError(f"no complete checkpoint in {exp}")


def same_tensors(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    return True  # non-tensor entries (Args, Config) name paths that differ between runs


def trained(state):
    return {k: v for k, v in state["Upstream"].items() if ".encoder." in k}


@pytest.mark.slow
def test_sigkill_during_finetuning_then_resume(tmp_path, tiny_hubert):
    g = tmp_path / "speechft.yaml"
    g.write_text(f"beta: {BETA}\n")
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    assert_ok(runner(train_args("speechft_hubert", uninterrupted, tiny_hubert, ["-g", g, "-o", SETTINGS]),
                     env=ONE_THREAD))
    final_a = states(uninterrupted / f"states-{T}.ckpt")

    step = random.Random(os.environ.get("SPEECHFT_FAULT_SEED") or time.time_ns()).randint(2, T - 1)
    proc = popen(["-m", "s3prl.run_downstream",
                  *train_args("speechft_hubert", killed, tiny_hubert, ["-g", g, "-o", SETTINGS])])
    try:
        wait_for(lambda: (killed / f"states-{step}.ckpt").exists(), proc)
    finally:
        kill_group(proc)
    resume_from = newest_complete(killed)
    j = int(resume_from.stem.split("-")[1])
    # the runner writes states-N in place (not atomically): killed while writing, states-N is cut
    # short and the newest complete one is states-(N-1)
    assert step - 1 <= j <= step, f"killed after step {step}, newest complete checkpoint {resume_from.name}"
    assert same_tensors(states(resume_from), states(uninterrupted / resume_from.name)), f"states-{j} differs"

    proc = runner(["-m", "train", "-e", resume_from, "--device", "cpu"], env=ONE_THREAD)
    assert_ok(proc)
    assert f"resuming after step {j}" in proc.stdout + proc.stderr
    theta0 = {f"model.{k}": v for k, v in files.weights(*files.read_encoder(tiny_hubert)).items()
              if k.startswith("encoder.")}
    head_only = int(BETA * T)
    for n in range(1, T + 1):
        encoder = trained(states(killed / f"states-{n}.ckpt"))
        assert same_tensors(encoder, theta0) == (n <= head_only), f"killed at {step}, resumed at {j}: step {n}"
    final_b = states(killed / f"states-{T}.ckpt")

    # the same resume from the uninterrupted run's states-j (in place: the runner writes to the
    # expdir stored in the checkpoint)
    for n in range(j + 1, T + 1):
        (uninterrupted / f"states-{n}.ckpt").unlink()
    assert_ok(runner(["-m", "train", "-e", uninterrupted / f"states-{j}.ckpt", "--device", "cpu"], env=ONE_THREAD))
    final_c = states(uninterrupted / f"states-{T}.ckpt")
    assert same_tensors(final_b, final_c), f"killed at step {step}, resumed from {j}: not bit-identical"
    for key in ("Upstream", "Downstream", "Optimizer"):
        assert same_tensors(final_b[key], final_c[key]), key
    # documented above: not equal to the uninterrupted run (other batches after the resume)
    assert not same_tensors(final_b["Downstream"], final_a["Downstream"])




def test_killed_corpus_run_again_writes_identical_bytes(tmp_path):
    pytest.importorskip("espeakng_loader")
    cmd = ["-m", "speechft_upstream.cli", "corpus", "--size", "tiny", "--seed", "5", "--workers", "2"]
    reference = tmp_path / "reference"
    assert_ok(run_py([*cmd, "--out", reference], env=ONE_THREAD))

    out = tmp_path / "corpus"
    proc = popen([*cmd, "--out", out])
    try:  # kill it once the first shard's audio is being written into its temp folder
        wait_for(lambda: any(True for _ in tmp_path.glob(".corpus.*.tmp/**/*.wav")), proc)
    finally:
        kill_group(proc)
    assert not out.exists() and list(tmp_path.glob(f".corpus.{proc.pid}.*.tmp"))
    again = run_py([*cmd, "--out", out], env=ONE_THREAD)
    assert_ok(again)
    assert f"left by an interrupted run (process {proc.pid} is gone)" in again.stderr
    assert not list(tmp_path.glob(".corpus.*.tmp"))
    assert corpus_digest(out) == corpus_digest(reference)


@pytest.mark.slow
def test_killed_benchmark_run_again_reuses_only_complete_stages(tmp_path):
    """Killed while fine-tuning (corpus and θ0 done, the fine-tuning stage half-way), run again:
    the two finished stages are reused, the killed one is redone, the run finishes. Then the
    report onto a full disk: one error line, the previous report untouched."""
    out, work = tmp_path / "results", tmp_path / "work"
    cmd = ["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--out", out, "--work", work]
    stages = work / "smoke"
    proc = popen(cmd)
    try:
        wait_for(lambda: (stages / "finetune_pr").is_dir() and any((stages / "finetune_pr").rglob("states-*.ckpt")),
                 proc, timeout=600)
    finally:
        kill_group(proc)
    assert (stages / "theta0" / "stage.json").is_file() and not (stages / "finetune_pr" / "stage.json").exists()
    again = run_py(cmd, env=ONE_THREAD, timeout=900)
    assert_ok(again)
    err = again.stderr
    assert f"reusing {stages / 'corpus'}" in err and f"reusing {stages / 'theta0' / 'theta0.pt'}" in err
    assert f"reusing {stages / 'finetune_pr'}" not in err and "finetune" in err
    assert (stages / "finetune_pr" / "stage.json").is_file() and (out / "results.md").is_file()

    # the report onto a full disk (tmpfs where we may mount one)
    from tests.test_write_failures import SmallDisk, check_failed, snapshot

    disk = SmallDisk(tmp_path)
    try:
        fs = disk.make("fs", size_kb=4096)
        if fs not in disk.mounts:
            pytest.skip("no tmpfs: the report check needs one (the report is many files)")
        shutil.copytree(out, fs / "results")
        disk.fill(fs, leave=8 << 10)
        before = snapshot(fs)
        proc = disk.run(["-m", "speechft_upstream.cli", "benchmark", "--smoke", "--out", fs / "results",
                         "--work", work], env=ONE_THREAD)
        check_failed(proc, fs / "results", before, fs)
    finally:
        disk.close()
