"""Checked reading and atomic writing of converted checkpoints."""

import os

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream.checkpoints import tiny
from speechft_upstream.errors import SpeechFTError


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_family_detected_for_each_format(tiny_dir):
    for arch in tiny.TINY_ARCHS:
        _, family = files.read_encoder(tiny_dir / f"{arch}.pt")
        assert family == arch


def test_pickle_payload_refused_without_running(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _Payload(str(marker))}, evil)
    with pytest.raises(SpeechFTError, match="refused to unpickle"):
        files.read_encoder(evil)
    assert not marker.exists()


def test_nan_weights_refused(tmp_path):
    state = tiny.make_tiny("hubert")
    state["model_weight"]["encoder.layers.1.fc2.bias"][0] = float("nan")
    path = tmp_path / "nan.pt"
    files.save_atomic(state, path)
    with pytest.raises(SpeechFTError, match=r"'encoder.layers.1.fc2.bias' holds NaN"):
        files.read_encoder(path)


@pytest.mark.parametrize("content, message", [
    ({"Upstream": {}, "Downstream": {}, "Args": 1}, "runner checkpoint"),
    ({"model": {}, "args": None, "optimizer_history": []}, "original fairseq checkpoint"),
    ([1, 2, 3], "top level is list"),
])
def test_foreign_formats(tmp_path, content, message):
    path = tmp_path / "x.pt"
    torch.save(content, path)
    with pytest.raises(SpeechFTError, match=message):
        files.read_encoder(path)


def test_empty_and_directory(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(SpeechFTError, match="empty file"):
        files.read_encoder(tmp_path / "empty.pt")
    with pytest.raises(SpeechFTError, match="is a directory"):
        files.read_encoder(tmp_path)


def test_save_atomic_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.pt"
    target.write_bytes(b"previous")

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        files.save_atomic({"x": Unpicklable()}, target)
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.pt"]


def test_saved_file_mode_follows_umask(tmp_path):
    path = files.save_atomic({"model": {"w": torch.zeros(1)}}, tmp_path / "m.pt")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_tiny_is_deterministic(tmp_path):
    a = tiny.make_tiny("wavlm", seed=3)["model"]
    b = tiny.make_tiny("wavlm", seed=3)["model"]
    c = tiny.make_tiny("wavlm", seed=4)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_load_keeps_the_global_allow_list(tmp_path):
    """A runner-checkpoint load must not take argparse.Namespace off torch's global list."""
    import argparse

    torch.serialization.add_safe_globals([argparse.Namespace])
    path = tmp_path / "runner.ckpt"
    torch.save({"Args": argparse.Namespace(a=1), "Upstream": {}}, path)
    files.load(path, files.RUNNER_ALLOWED)
    assert argparse.Namespace in torch.serialization.get_safe_globals()
    assert torch.load(path, weights_only=True)["Args"].a == 1
