"""`pip install .` for users with their own environment: the wheel carries the startup hook
at the site-packages root and leaves their torch alone (no torch pin)."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

RUNNER_DEPS = ("tensorboardX", "pandas", "librosa", "editdistance")  # s3prl's runner imports them


def test_wheel_has_hook_and_no_torch_pin(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("speechft-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "speechft_upstream.pth" in names  # root of the wheel = root of site-packages
        assert archive.read("speechft_upstream.pth").decode().strip() == "import speechft_upstream.autoload"
        # data files the commands read at run time
        assert "speechft_upstream/evaluate/superb_references.yaml" in names
        assert "speechft_upstream/evaluate/mini_superb_references.yaml" in names
        meta = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    torch_req = [r for r in requires if r.split(">")[0].split("=")[0].split("<")[0].strip() == "torch"]
    assert torch_req and "==" not in torch_req[0], torch_req
    assert any(r.startswith("s3prl") for r in requires)
    # the runner's undeclared dependencies are speechft's own (no extra needed); catalyst is not
    plain = [r.split(";")[0].strip() for r in requires if "extra ==" not in r]
    for name in RUNNER_DEPS:
        assert any(r.split(">")[0].split("=")[0].split("<")[0].strip() == name for r in plain), (name, requires)
    assert not [r for r in requires if r.lower().startswith("catalyst")]
    assert "speechft = speechft_upstream.cli:main" in entry_points


def test_requirements_drop_catalyst():
    for name in ("venv.txt", "constraints.txt"):
        lines = (REPO / "requirements" / name).read_text().splitlines()
        assert not [ln for ln in lines if ln.lower().startswith("catalyst")], name
        for dep in RUNNER_DEPS:
            assert any(ln.split("==")[0] == dep for ln in lines), (name, dep)


def test_keyword_spotting_imports_with_catalyst_absent():
    """Where catalyst is not installed at all, the stand-in supplies what s3prl's KS expert imports."""
    code = ("import sys; sys.modules['catalyst'] = None  # as if not installed: import raises ModuleNotFoundError\n"
            "import s3prl.downstream.speech_commands.expert as expert, catalyst\n"
            "from catalyst.data.sampler import DistributedSamplerWrapper\n"
            "print(catalyst.__doc__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("stand-in: catalyst does not import on this Python")


@pytest.mark.slow
def test_plain_pip_install_gives_a_working_runner(tmp_path):
    """A fresh venv (no system site-packages) with torch as users have it, then a plain
    `pip install .`: s3prl's runner starts, catalyst is absent, speechft's upstreams are there.
    About 2-5 minutes here (pip resolves and installs ~1.5 GB from its cache or PyPI)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args, timeout=900):
        proc = subprocess.run([py, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=tmp_path)
        assert proc.returncode == 0, (args, proc.stdout[-2000:], proc.stderr[-4000:])
        return proc

    import torch

    # the user's own torch (CPU build, as in the shared venv), then speechft as the README says
    run("-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}", "torchaudio==2.11.0")
    run("-m", "pip", "install", "-q", REPO)
    proc = run("-m", "s3prl.run_downstream", "-h", timeout=300)
    assert "usage: run_downstream.py" in proc.stdout
    missing = subprocess.run([py, "-c", "import catalyst"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode != 0 and "No module named 'catalyst'" in missing.stderr
    proc = run("-c", "import s3prl.hub as hub, s3prl.downstream.speech_commands.expert, catalyst; "
                     "print(callable(hub.speechft_hubert), catalyst.__doc__)", timeout=300)
    assert proc.stdout.strip().endswith("True stand-in: catalyst does not import on this Python")
