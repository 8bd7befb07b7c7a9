"""The merge's streamed I/O pieces on their own: hashing, CRC-32, early writeback.

The end-to-end merges in test_merge_cli.py use tiny checkpoints, which fit in one hashing window
and never reach the writeback threshold; these tests shrink both so every path runs.
"""

import hashlib
import mmap
import os
import zipfile
import zlib

import pytest
import torch

from speechft_upstream.checkpoints import stream, zipcrc
from speechft_upstream.checkpoints.sha256 import Sha256


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 3 * 4096 + 17])
def test_sha256_over_sliding_windows_equals_hashlib(tmp_path, monkeypatch, size):
    monkeypatch.setattr(Sha256, "WINDOW", mmap.ALLOCATIONGRANULARITY)  # many windows
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(size))
    assert Sha256(path).result() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_sha256_falls_back_to_reading(tmp_path, monkeypatch):
    def unmappable(self, handle):
        handle.read(10)  # a partial attempt must not leak into the digest
        raise ValueError("cannot mmap")

    monkeypatch.setattr(Sha256, "_mapped", unmappable)
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(100_000))
    assert Sha256(path).result() == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fast", [True, False])
def test_crc_of_storage_equals_zlib(monkeypatch, fast):
    if fast and zipcrc._fast_crc32 is None:
        pytest.skip("libdeflate is not installed here")
    if not fast:
        monkeypatch.setattr(zipcrc, "_fast_crc32", None)
    g = torch.Generator().manual_seed(0)
    for numel in (0, 1, 3, 1000, 65_537):
        tensor = torch.randn(numel, generator=g)
        storage = tensor.untyped_storage()
        for nbytes in {0, numel * 4, max(numel * 4 - 3, 0)}:
            assert zipcrc.crc_of(storage, nbytes) == zlib.crc32(tensor.numpy().tobytes()[:nbytes])
    assert zipcrc.crc_of("abc", 3) == zlib.crc32(b"abc")
    assert zipcrc.crc_of(b"abcdef", 4) == zlib.crc32(b"abcd")


def test_writer_with_early_writeback_writes_a_valid_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(stream.StreamWriter, "WRITEBACK_EVERY", 1000)  # after nearly every record
    calls = []
    real = stream._start_writeback
    monkeypatch.setattr(stream, "_start_writeback", lambda *a: (calls.append(a), real(*a)))
    g = torch.Generator().manual_seed(1)
    tensors = {f"w{i}": torch.randn(7, 50 + i, generator=g) for i in range(6)}
    scratch = torch.empty(400)
    writer = stream.StreamWriter(tmp_path / "out.pt")
    refs = {}
    for name, tensor in tensors.items():
        buffer = scratch[:tensor.numel()].view(tensor.shape)
        buffer.copy_(tensor)  # written from a reused scratch buffer, as the merge does
        refs[name] = writer.add(buffer)
    writer.finish({"model_weight": refs})
    path = writer.commit()
    assert len(calls) >= 5
    offsets = [(offset, length) for _, offset, length in calls]
    assert all(b[0] == a[0] + a[1] for a, b in zip(offsets, offsets[1:]))  # contiguous, no overlap
    loaded = torch.load(path, weights_only=True)["model_weight"]
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert torch.equal(loaded[name], tensor)
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
    assert os.listdir(tmp_path) == ["out.pt"]
