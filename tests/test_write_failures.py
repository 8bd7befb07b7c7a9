"""Write failures on a tiny filesystem: one error line, exit 1, no temp left, previous output kept.

The filesystem is a small tmpfs mounted for the test (we need root for that; CI runs as root).
Where mounting is refused, the same tests run under RLIMIT_FSIZE instead (the kernel then fails
writes past the limit with EFBIG, the process ignoring SIGXFSZ); with neither, they skip.
"""

import os
import re
import resource
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, assert_ok, run_py, runner, train_args

ERROR = r"(no space left on device|file too large) \(wrote \d+(\.\d)? (of \d+(\.\d)? )?MB\)"


class SmallDisk:
    """A folder where at most ``free`` more bytes can be written (tmpfs or RLIMIT_FSIZE)."""

    def __init__(self, root):
        self.root, self.mounts, self.limit = root, [], None

    def make(self, name="fs", size_kb=1024):
        folder = self.root / name
        folder.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)]
        if os.environ.get("SPEECHFT_TEST_NO_MOUNT"):  # exercise the fallback
            command = ["false"]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode == 0:
            self.mounts.append(folder)
            return folder
        probe = subprocess.run([sys.executable, "-c", "import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))"])
        if probe.returncode:
            pytest.skip(f"cannot mount a tmpfs ({proc.stderr.strip()}) nor set RLIMIT_FSIZE")
        return folder

    def fill(self, folder, leave=48 << 10):
        """Leave about ``leave`` bytes free in ``folder``."""
        if folder not in self.mounts:
            self.limit = max(leave, 16)  # tempfile's start-up probe writes 4 bytes
            return
        stat = os.statvfs(folder)
        free = stat.f_bavail * stat.f_frsize
        with open(folder / "filler", "wb") as handle:
            handle.write(b"\0" * max(0, free - leave))

    def run(self, args, env=None, timeout=300):
        full = dict(os.environ, **(env or {}))
        limit = self.limit

        def constrain():
            if limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run([sys.executable, *map(str, args)], env=full, text=True, capture_output=True,
                              timeout=timeout, preexec_fn=constrain, cwd=REPO)

    def close(self):
        for folder in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def disk(tmp_path):
    small = SmallDisk(tmp_path)
    yield small
    small.close()


def speechft(disk, *args, env=None):
    return disk.run(["-m", "speechft_upstream.cli", *args], env=env)


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != "filler"}


def check_failed(proc, out, before, folder):
    """One error line naming OUT, exit 1, nothing else changed in ``folder``."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "frame #" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert len(errors) == 1, proc.stderr
    assert re.fullmatch(rf"speechft: error: {re.escape(str(out))}: {ERROR}", errors[0]), errors[0]
    assert not [p for p in folder.rglob("*") if p.name.endswith(".tmp")], list(folder.rglob("*"))
    assert snapshot(folder) == before


def previous(path, folder=False):
    """Something already at OUT that a failed write must leave as it was."""
    if folder:
        path.mkdir()
        (path / "config.json").write_text('{"previous": true}\n')
    else:
        path.write_bytes(b"previous output\n")
    return path


def test_merge_onto_full_disk(disk, tiny_dir):
    fs = disk.make()
    out = previous(fs / "m.pt")
    disk.fill(fs, leave=96 << 10)  # the merged file is about 290 kB
    before = snapshot(fs)
    proc = speechft(disk, "merge", "--base", tiny_dir / "hubert.pt", "--finetuned", tiny_dir / "hubert.pt",
                    "--alpha", "0.25", "-o", out, "--force")
    check_failed(proc, out, before, fs)
    assert "of 0.3 MB" in proc.stderr  # the size the merge was writing


def test_next_write_removes_temps_of_dead_processes_only(tmp_path, tiny_dir):
    out = tmp_path / "m.pt"
    # A writer that is gone: its temp name carries a pid no process has (one that just exited).
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)
    stale = tmp_path / f".m.pt.{dead}.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".m.pt.{os.getpid()}.efgh5678.tmp"  # a running writer's temp is left alone
    live.write_bytes(b"in progress")
    other = tmp_path / f".other.pt.{dead}.abcd1234.tmp"  # another output's temp is not ours to judge
    other.write_bytes(b"")
    proc = run_py(["-m", "speechft_upstream.cli", "merge", "--base", tiny_dir / "hubert.pt",
                   "--finetuned", tiny_dir / "hubert.pt", "--alpha", "0.5", "-o", out])
    assert_ok(proc)
    notes = [ln for ln in proc.stderr.splitlines() if "removed" in ln]
    assert notes == [f"speechft: removed {stale.name} beside {out}, left by an interrupted run "
                     f"(process {dead} is gone)"], proc.stderr
    assert not stale.exists() and live.exists() and other.exists() and out.is_file()


def big_hubert(path):
    """The tiny HuBERT plus one 40 MB tensor, so that writing a merge takes a moment."""
    import torch

    from speechft_upstream.checkpoints import files, tiny

    state = tiny.make_tiny("hubert", 0)
    files.weights(state, "hubert")["encoder.padding"] = torch.ones(10_000_000)
    files.save_atomic(state, path)
    return path


def test_sigkilled_merge_leaves_a_temp_that_the_next_merge_removes(tmp_path):
    import time

    big = big_hubert(tmp_path / "big.pt")
    out = tmp_path / "m.pt"
    args = [sys.executable, "-m", "speechft_upstream.cli", "merge", "--base", big, "--finetuned", big,
            "--alpha", "0.5", "-o", out, "--force"]
    for attempt in range(5):  # kill it while the temp is being written; rarely it is too quick
        proc = subprocess.Popen(list(map(str, args)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while not list(tmp_path.glob(".m.pt.*.tmp")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if list(tmp_path.glob(".m.pt.*.tmp")):
            break
    temps = list(tmp_path.glob(".m.pt.*.tmp"))
    assert len(temps) == 1 and f".m.pt.{proc.pid}." in temps[0].name
    again = run_py(args[1:])
    assert_ok(again)
    assert f"left by an interrupted run (process {proc.pid} is gone)" in again.stderr
    assert not list(tmp_path.glob(".m.pt.*.tmp")) and out.is_file()


@pytest.fixture(scope="module")
def runner_ckpt(tmp_path_factory, tiny_hubert):
    folder = tmp_path_factory.mktemp("runner")
    (folder / "g.yaml").write_text("beta: 0\n")
    short = "config.runner.total_steps=1,,config.runner.eval_step=100,,config.runner.save_step=1"
    assert_ok(runner(train_args("speechft_hubert", folder / "exp", tiny_hubert,
                                ["-g", folder / "g.yaml", "-o", short]), env={"OMP_NUM_THREADS": "1"}))
    return folder / "exp" / "states-1.ckpt"


def test_extract_onto_full_disk(disk, runner_ckpt, tiny_hubert):
    fs = disk.make()
    out = previous(fs / "theta_prime.pt")
    disk.fill(fs)
    before = snapshot(fs)
    check_failed(speechft(disk, "extract", runner_ckpt, "--base", tiny_hubert, "-o", out, "--force"), out, before, fs)


def test_convert_onto_full_disk(disk, tmp_path):
    from speechft_upstream.checkpoints import tiny

    fairseq = tmp_path / "fairseq.pt"
    tiny.write_tiny_format("hubert", fairseq, seed=0, fmt="fairseq")
    fs = disk.make()
    out = previous(fs / "converted.pt")
    disk.fill(fs)
    before = snapshot(fs)
    check_failed(speechft(disk, "convert", fairseq, "-o", out, "--force"), out, before, fs)


def test_export_hf_onto_full_disk(disk, tiny_hubert):
    fs = disk.make()
    out = previous(fs / "hf", folder=True)
    disk.fill(fs)
    before = snapshot(fs)
    check_failed(speechft(disk, "export-hf", tiny_hubert, out, "--force"), out, before, fs)


def test_registry_onto_full_disk(disk, tiny_hubert):
    fs = disk.make()
    registry = fs / "registry.json"
    registry.write_text('{"old": {"family": "hubert", "path": "/nowhere.pt"}}\n')
    disk.fill(fs, leave=0)
    before = snapshot(fs)
    proc = speechft(disk, "register", "new_name", tiny_hubert, env={"SPEECHFT_REGISTRY": str(registry)})
    check_failed(proc, registry, before, fs)


def test_pretrain_onto_full_disk(disk, tmp_path):
    from tests.test_pretrain import write_corpus

    corpus = write_corpus(tmp_path / "corpus", n_train=3, n_dev=1, seconds=1.0)
    fs = disk.make(size_kb=4096)
    out = previous(fs / "theta0.pt")
    disk.fill(fs)
    before = snapshot(fs)
    proc = speechft(disk, "pretrain", "--corpus", corpus, "-o", out, "--quick", "--clusters", "4", "--steps", "1",
                    "--force", env={"OMP_NUM_THREADS": "1"})
    check_failed(proc, out, before, fs)


def test_unsupervised_onto_full_disk(disk, tmp_path, tiny_hubert):
    from tests.test_unsupervised import write_audio

    audio = write_audio(tmp_path / "audio")
    fs = disk.make()
    out = previous(fs / "theta_prime.pt")
    disk.fill(fs)
    before = snapshot(fs)
    proc = speechft(disk, "unsupervised", "--ckpt", tiny_hubert, "--audio", audio, "-o", out, "--steps", "1",
                    "--batch-size", "2", "--max-seconds", "1", "--min-codewords", "1", "--force",
                    env={"OMP_NUM_THREADS": "1"})
    check_failed(proc, out, before, fs)


def test_analyze_onto_full_disk(disk, tmp_path, tiny_dir):
    from tests.test_unsupervised import write_audio

    audio = write_audio(tmp_path / "audio", n=3, seconds=2.0)
    fs = disk.make()
    out = previous(fs / "analysis", folder=True)
    disk.fill(fs, leave=8 << 10)
    before = snapshot(fs)
    proc = speechft(disk, "analyze", "--base", tiny_dir / "hubert.pt", "--models", tiny_dir / "hubert.pt",
                    "--audio", audio, "-o", out)
    check_failed(proc, out, before, fs)


def test_corpus_onto_full_disk(disk):
    pytest.importorskip("espeakng_loader")
    fs = disk.make(size_kb=2048)
    out = previous(fs / "corpus", folder=True)
    (out / "corpus.json").write_text('{"format": 0}\n')
    disk.fill(fs, leave=(512 if fs in disk.mounts else 32) << 10)  # RLIMIT_FSIZE is per file
    before = snapshot(fs)
    proc = speechft(disk, "corpus", "--out", out, "--size", "tiny", "--seed", "3", "--force")
    check_failed(proc, out, before, fs)


def test_merge_into_a_folder_it_may_not_write(tmp_path, tiny_dir):
    """EROFS/EACCES: refused in one line before any byte is written (root ignores modes, so a
    read-only mount stands in for a folder without write permission)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs ({proc.stderr.strip()})")
    try:
        out = folder / "m.pt"
        proc = run_py(["-m", "speechft_upstream.cli", "merge", "--base", tiny_dir / "hubert.pt",
                       "--finetuned", tiny_dir / "hubert.pt", "--alpha", "0.5", "-o", out])
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == f"speechft: error: {out}: read-only file system"
        assert os.listdir(folder) == []
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
