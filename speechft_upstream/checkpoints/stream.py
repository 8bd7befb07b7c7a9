"""Streamed checkpoint I/O for merging: inputs tensor by tensor, outputs record by record.

Reading: each input is opened with ``files.load`` (weights_only, allow-list, memory-mapped),
so nothing but the pickled metadata is read up front. Touched pages of a mapping count in the
process's RSS until unmapped, so once a tensor has been merged its pages are handed back with
madvise(MADV_DONTNEED); the mapping is private and never written, so a later touch simply reads
the file again. Peak memory is then the interpreter plus a few tensors, not the checkpoints.

Writing: torch's record-level zip writer (the one ``torch.save`` drives) takes each merged tensor
as soon as it exists; the pickle that names the tensors is written last, laid out as torch.save
lays it out, so ``torch.load`` (mmap or not, weights_only or not) reads the file like any other.
Output goes to a temporary file in the target folder and is renamed only when complete. torch's
writer is handed an ``atomic.GuardedFile``, never a path: a failed write (full disk, I/O error)
inside torch's C++ code would abort the process, so it is kept and raised here instead, as one
line, after the first record that hit it.
"""

import collections
import ctypes
import io
import mmap
import os
import pickle
import sys
from pathlib import Path

import torch

from speechft_upstream.checkpoints import atomic, files
from speechft_upstream.checkpoints import zipcrc
from speechft_upstream.checkpoints.sha256 import Sha256
from speechft_upstream.errors import SpeechFTError

_MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE
_SYNC_FILE_RANGE_WRITE = 2
_libc_functions = {}


def _libc(name, argtypes):
    """A libc function through ctypes (looked up once), or None where libc lacks it."""
    if name not in _libc_functions:
        function = getattr(ctypes.CDLL(None, use_errno=True), name, None)
        if function is not None:
            function.argtypes = argtypes
        _libc_functions[name] = function
    return _libc_functions[name]


def _madvise(start, length):
    _libc("madvise", (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int))(start, length, _MADV_DONTNEED)


def _start_writeback(fd, offset, length):
    """Start writing ``length`` bytes of ``fd`` from ``offset`` to disk without waiting for them
    (Linux sync_file_range; a no-op elsewhere), so the disk works while the merge computes and
    the fsync at the end waits for the tail only. Durability still rests on that fsync."""
    if not sys.platform.startswith("linux"):
        return
    function = _libc("sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint))
    if function is not None:
        function(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _mappings_of(path):
    """Address ranges of this process's mappings of ``path`` (Linux /proc; empty elsewhere)."""
    if not sys.platform.startswith("linux"):
        return set()
    st = os.stat(path)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) >= 5 and fields[3] == device and fields[4] == str(st.st_ino):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.add((start, end))
    return found


SPIN_PREFIX = "encoder.model."


def _spin_weights(state, path):
    """A SPIN Lightning checkpoint's encoder: its ``state_dict`` entries ``encoder.model.<param>``."""
    params = state["state_dict"]
    if not isinstance(params, dict):
        raise SpeechFTError(f"{path}: its 'state_dict' is a {type(params).__name__}, not a mapping of weights")
    weights = {k[len(SPIN_PREFIX):]: v for k, v in params.items() if isinstance(k, str) and k.startswith(SPIN_PREFIX)}
    if not weights:
        raise SpeechFTError(f"{path}: a Lightning checkpoint whose 'state_dict' has no '{SPIN_PREFIX}*' keys "
                            "(expected SPIN's encoder)")
    return weights


def finetuned_kind(state):
    """Which of the θ′ files the authors' merge reads ``state`` is, or None (a converted checkpoint).

    runner: s3prl's runner checkpoint (``Upstream``); spin: a SPIN Lightning checkpoint
    (``state_dict`` with ``encoder.model.*``); model: a bare ``{model: weights}`` dict (their
    continued pre-training), which is also DeCoAR 2.0's converted format, so it is matched to θ0
    by parameter names rather than by family.
    """
    if not isinstance(state, dict):
        return None
    keys = set(state)
    if {"Args", "Step"} <= keys:
        return "runner"
    if "state_dict" in keys and not keys & {"model", "model_weight", "Upstream"}:
        return "spin"
    if keys == {"model"}:
        return "model"
    return None


class Source:
    """One input: a converted checkpoint (θ0 or θ′), or for θ′ one of the files ``finetuned_kind`` names.

    ``weights`` maps parameter names (converted-format names, no ``model.`` prefix) to tensors
    backed by the file; ``top`` is the loaded top-level dict; ``family`` is None where the file
    does not say (runner, SPIN and bare-model θ′, matched to θ0 by their parameter names).
    """

    def __init__(self, path, allow_runner):
        self.path = Path(path)
        before = _mappings_of(self.path) if self.path.is_file() else set()
        state = files.load(self.path, files.RUNNER_ALLOWED if allow_runner else ())
        self.sha256 = Sha256(self.path)
        self._ranges = sorted(_mappings_of(self.path) - before)
        self.top = state
        kind = finetuned_kind(state) if allow_runner else None
        if kind == "runner":
            from speechft_upstream.checkpoints.extract import encoder_of

            self.kind, self.family = "runner", None
            self.weights = encoder_of(state, self.path)
        elif kind == "spin":
            self.kind, self.family = "spin", None
            self.weights = _spin_weights(state, self.path)
        elif kind == "model":
            self.kind, self.family = "model", None
            self.weights = state["model"]
            if not isinstance(self.weights, dict) or not self.weights:
                raise SpeechFTError(f"{self.path}: holds no weights under 'model'")
        else:
            self.kind = "converted"
            self.family = files.detect_family(state, self.path)
            self.weights = files.weights(state, self.family)
            if not isinstance(self.weights, dict) or not self.weights:
                raise SpeechFTError(f"{self.path}: holds no weights under its {self.family} weight key")
        for name, value in self.weights.items():
            if not isinstance(value, torch.Tensor):
                raise SpeechFTError(f"{self.path}: weight {name!r} is a {type(value).__name__}, not a tensor")

    def release(self, tensor):
        """Drop ``tensor``'s file pages from this process's memory (they stay in the page cache)."""
        if not self._ranges or tensor.numel() == 0:
            return
        start = tensor.untyped_storage().data_ptr()
        end = start + tensor.untyped_storage().nbytes()
        for lo, hi in self._ranges:
            a, b = max(start, lo), min(end, hi)
            if a < b:
                a -= a % _PAGE
                b = min(hi, b + (-b % _PAGE))
                _madvise(a, b - a)


# --- writing -----------------------------------------------------------------------------------

def _storage_type(dtype):
    names = torch.storage._dtype_to_storage_type_map()
    if dtype not in names:
        raise SpeechFTError(f"cannot write tensors of dtype {dtype}")
    return getattr(torch, names[dtype])


class _StorageRef:
    __slots__ = ("key", "dtype", "numel")

    def __init__(self, key, dtype, numel):
        self.key, self.dtype, self.numel = key, dtype, numel


class TensorRef:
    """Stands in for a tensor already written as a record; pickles exactly like that tensor."""

    __slots__ = ("storage", "shape", "stride")

    def __init__(self, storage, shape, stride):
        self.storage, self.shape, self.stride = storage, tuple(shape), tuple(stride)

    def __reduce_ex__(self, protocol):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, self.stride, False, collections.OrderedDict()))


class StreamWriter:
    """A checkpoint written record by record into a temporary file, renamed into place on commit."""

    WRITEBACK_EVERY = 64 << 20  # start writing to disk every this many bytes (see _start_writeback)

    def __init__(self, path, expected_bytes=None):
        self.path = Path(path)
        self.expected_bytes = expected_bytes  # for the "wrote N of M MB" of a failed write
        fd, self.tmp = atomic.new_temp(self.path)
        self._file = atomic.GuardedFile(os.fdopen(fd, "wb"))
        # CRC computation off: zipcrc fills the CRCs in afterwards, several times faster
        self._zip = torch._C.PyTorchFileWriter(self._file, False, 64)
        self._crcs = {}
        self._unsynced = 0  # bytes written since writeback was last started
        self._synced_to = 0
        self._keys = 0
        self._stray = False
        self._done = False

    def _record(self, data, nbytes):
        key = str(self._keys)
        self._keys += 1
        self._zip.write_record(f"data/{key}", data, nbytes)
        self._check()
        self._crcs[f"data/{key}"] = zipcrc.crc_of(data, nbytes)
        self._unsynced += nbytes
        if self._unsynced >= self.WRITEBACK_EVERY:
            self._file.flush()
            self._check()
            end = self._file.tell()
            _start_writeback(self._file.fileno(), self._synced_to, end - self._synced_to)
            self._synced_to, self._unsynced = end, 0
        return key

    def _check(self, err=None):
        err = err or self._file.error
        if err is not None:
            raise atomic.write_error(self.path, err, atomic.size_of(self.tmp), self.expected_bytes)

    def add(self, tensor):
        """Write ``tensor``'s bytes now; returns the stand-in to put in the object given to finish.

        The bytes are copied into the file before this returns, so ``tensor`` may be a scratch
        buffer that is overwritten right after; only the tensor's own elements are written, even
        when it is a view into a larger storage.
        """
        tensor = tensor.detach().cpu().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        storage = tensor.untyped_storage()
        if tensor.storage_offset():
            storage = tensor.clone().untyped_storage()  # a view further into a storage: copy its part
        # writes the first nbytes of the storage: the tensor's own elements, scratch buffer or not
        key = self._record(storage if nbytes else b"", nbytes)
        return TensorRef(_StorageRef(key, tensor.dtype, tensor.numel()), tensor.shape, tensor.stride())

    def _persistent_id(self, obj):
        if isinstance(obj, _StorageRef):
            return ("storage", _storage_type(obj.dtype), obj.key, "cpu", obj.numel)
        if isinstance(obj, torch.storage.TypedStorage):  # a real tensor elsewhere in the object
            self._stray = True
            untyped = obj._untyped_storage.cpu()
            key = self._record(untyped, untyped.nbytes())
            return ("storage", getattr(torch, obj._pickle_storage_type()), key, "cpu", obj._size())
        return None

    def finish(self, obj):
        """Write the pickle and the archive's trailer, flush to disk; the file is not visible yet."""
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=2)
        pickler.persistent_id = self._persistent_id
        pickler.dump(obj)
        data = buffer.getvalue()
        self._zip.write_record("data.pkl", data, len(data))
        # The small records torch.save writes. Format version 1 promises storages stored in the
        # order the pickle meets them, which stops being true if stray tensors were added above.
        records = [(".storage_alignment", "64"), ("byteorder", sys.byteorder)]
        if not self._stray:
            records.insert(0, (".format_version", "1"))
        for name, value in records:
            self._zip.write_record(name, value, len(value))
        self._zip.write_end_of_file()
        self._file.flush()
        self._check()
        try:
            zipcrc.fill_in(self.tmp, self._crcs)
            os.fsync(self._file.fileno())  # syncs the file, whichever descriptor wrote the CRCs
        except OSError as err:
            self._check(err)
        self._file.close()
        self._check()
        atomic.usual_mode(self.tmp)

    def commit(self):
        try:
            os.replace(self.tmp, self.path)
        except OSError as err:
            raise atomic.write_error(self.path, err) from None
        self._done = True
        return self.path

    def abort(self):
        if self._done:
            return
        self._done = True
        self._zip = None  # its destructor writes a trailer: into the guarded file, so it cannot fail
        self._file.close()
        try:
            self.tmp.unlink()
        except OSError:
            pass
