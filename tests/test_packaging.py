"""`pip install .` for users with their own environment: the wheel carries the startup hook
at the site-packages root and leaves their torch alone (no torch pin)."""

import subprocess
import sys
import zipfile

from tests.conftest import REPO


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
    assert "speechft = speechft_upstream.cli:main" in entry_points
