"""All-or-nothing writes: temp beside the output, renamed when complete; write failures in one line.

Every output is written to a temporary name beside it (``.NAME.<pid>.<random>.tmp``) and renamed
only when complete. torch's zip writer aborts the whole process (SIGABRT) when a write fails in
its C++ code, so torch is only ever handed a GuardedFile: its write() never fails; the first
OSError is kept and reported once torch has returned. Temps whose process is gone (a SIGKILL, a
power cut) are removed by the next write to the same output.
"""

import errno
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

class GuardedFile:
    """A binary file object whose writes never raise: the first OSError is kept in ``error`` and
    later writes are dropped (their size still returned, so a C++ caller sees success)."""

    def __init__(self, handle):
        self._handle = handle
        self.error = None

    def _fail(self, err):
        if self.error is None:
            self.error = err if isinstance(err, OSError) else OSError(errno.EIO, str(err))

    def write(self, data):
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                self._handle.write(data)
            except (OSError, ValueError) as err:  # ValueError: written after close (torch's destructor)
                self._fail(err)
        return size

    def seek(self, offset, whence=os.SEEK_SET):
        if self.error is None:
            try:
                return self._handle.seek(offset, whence)
            except (OSError, ValueError) as err:
                self._fail(err)
        return 0

    def tell(self):
        try:
            return self._handle.tell()
        except (OSError, ValueError):
            return 0

    def flush(self):
        if self.error is None:
            try:
                self._handle.flush()
            except (OSError, ValueError) as err:
                self._fail(err)

    def fileno(self):
        return self._handle.fileno()

    def close(self):
        try:
            self._handle.close()
        except (OSError, ValueError) as err:
            self._fail(err)


def _mb(nbytes):
    return f"{nbytes / 1e6:.0f}" if nbytes >= 100e6 else f"{nbytes / 1e6:.1f}"


def os_error_of(err):
    """The OSError behind ``err``: itself, one in its cause chain, or an errno named in its text
    (safetensors and libsndfile report I/O failures as their own exception types)."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"(?:os error |code: )(\d+)", str(err))
    if found:
        return OSError(int(found.group(1)), os.strerror(int(found.group(1))))
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EROFS, errno.EFBIG):
        if os.strerror(code).lower() in str(err).lower():
            return OSError(code, os.strerror(code))
    return None


def write_error(path, err, written=None, expected=None):
    """The one-line error for a failed write of ``path``."""
    reason = os.strerror(err.errno).lower() if getattr(err, "errno", None) else str(err)
    if written is None:
        return SpeechFTError(f"{path}: {reason}")
    amount = f"{_mb(written)} of {_mb(expected)} MB" if expected else f"{_mb(written)} MB"
    return SpeechFTError(f"{path}: {reason} (wrote {amount})")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet is a zombie: gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temps(path):
    """Remove temps of ``path`` left by processes that no longer run; say so in one line."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp$")
    removed, pids = [], set()
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        found = pattern.match(name)
        if not found or int(found.group(1)) == os.getpid() or _alive(int(found.group(1))):
            continue
        stale = path.parent / name
        try:
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        except FileNotFoundError:
            continue  # another writer cleaned it up first
        except OSError:
            continue
        removed.append(stale)
        pids.add(int(found.group(1)))
    if removed:
        what = removed[0].name if len(removed) == 1 else f"{len(removed)} temps"
        print(f"speechft: removed {what} beside {path}, left by an interrupted run "
              f"(process {', '.join(map(str, sorted(pids)))} is gone)", file=sys.stderr, flush=True)
    return removed


def new_temp(path, folder=False):
    """A fresh temp file (returns ``(fd, tmp)``) or folder (returns ``tmp``) beside ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path.parent, err) from None
    remove_stale_temps(path)
    options = dict(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        if folder:
            return Path(tempfile.mkdtemp(**options))
        fd, tmp = tempfile.mkstemp(**options)
        return fd, Path(tmp)
    except OSError as err:
        raise write_error(path, err) from None


def size_of(path):
    """Bytes under ``path`` (a file or a folder), 0 when it is gone."""
    path = Path(path)
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0


def usual_mode(path, folder=False):
    """mkstemp/mkdtemp make 0600/0700: give the output the modes a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if folder else 0o666) & ~umask)


def _write_atomic(path, write, expected=None):
    """Call ``write(handle)`` on a temp file beside ``path``, then rename: never a partial file.

    A failed write (full disk, I/O error, no permission) becomes one SpeechFTError line naming
    ``path`` and how much was written of ``expected()`` bytes; the temp goes, ``path`` stays as
    it was.
    """
    path = Path(path)
    fd, tmp = new_temp(path)
    handle = GuardedFile(os.fdopen(fd, "wb"))
    try:
        try:
            write(handle)
            handle.flush()
            if handle.error is None:
                os.fsync(handle.fileno())
        except OSError as err:
            handle._fail(err)
        if handle.error is not None:
            written = size_of(tmp)
            raise write_error(path, handle.error, written, expected() if expected else None) from None
        handle.close()
        if handle.error is not None:
            raise write_error(path, handle.error, size_of(tmp), expected() if expected else None) from None
        try:
            usual_mode(tmp)
            os.replace(tmp, path)
        except OSError as err:
            raise write_error(path, err) from None
    except BaseException:
        handle.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _tensor_bytes(obj):
    """Bytes of the distinct tensor storages in a nested checkpoint object (the size to expect)."""
    import torch

    seen, total, stack = set(), 0, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen or not storage.data_ptr():
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def save_atomic(obj, path):
    """torch.save to a temporary file in the same folder, then rename."""
    import torch

    return _write_atomic(path, lambda handle: torch.save(obj, handle), expected=lambda: _tensor_bytes(obj))


def write_bytes_atomic(data, path):
    """Any small output file (reports, figures, tables) written the same all-or-nothing way."""
    return _write_atomic(path, lambda handle: handle.write(data), expected=lambda: len(data))


def write_text_atomic(text, path):
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj, path, **dump_options):
    """A JSON file (sidecars, logs, the registry) written the same all-or-nothing way."""
    return write_text_atomic(json.dumps(obj, **dump_options) + "\n", path)


def publish_folder(tmp, out):
    """Move the finished folder ``tmp`` into place as ``out``, each step a rename.

    A new ``out`` is one rename. Into an existing ``out`` each entry of ``tmp`` replaces its
    namesake (a sub-folder through a rename aside first), entries ``tmp`` lacks are left alone.
    """
    tmp, out = Path(tmp), Path(out)
    usual_mode(tmp, folder=True)
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        return
    for name in sorted(os.listdir(tmp)):
        src, dst = tmp / name, out / name
        if src.is_dir() and dst.is_dir() and not dst.is_symlink():
            aside = new_temp(dst, folder=True)
            os.rename(dst, aside / name)
            os.rename(src, dst)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(src, dst)
    shutil.rmtree(tmp, ignore_errors=True)


def failure_of(err, where=None):
    """The OSError a failed write came from, or None when ``err`` is not a write failure."""
    if isinstance(err, SpeechFTError):
        return None
    found = os_error_of(err)
    if found is None and where is not None and isinstance(err, (OSError, RuntimeError)):
        # libsndfile reports a failed write as "system error" without the errno: ask the
        # filesystem the same question (write 1 MiB beside the output) to learn what it was.
        probe = Path(where) / f".probe.{os.getpid()}.tmp"
        try:
            with open(probe, "wb", buffering=0) as handle:
                left = memoryview(bytes(1 << 20))
                while left:  # a raw write may be short just before the limit: the next one fails
                    left = left[handle.write(left):]
        except OSError as probed:
            found = probed
        finally:
            try:
                probe.unlink()
            except OSError:
                pass
    return found


class folder_output:
    """``with folder_output(OUT) as tmp:`` write files into ``tmp``; on success they replace
    OUT's (``publish_folder``). A write failure becomes one SpeechFTError line about OUT; ``tmp``
    always goes, and OUT is untouched unless everything was written."""

    def __init__(self, out, expected=None):
        self.out, self.expected = Path(out), expected

    def __enter__(self):
        self.tmp = new_temp(self.out, folder=True)
        return self.tmp

    def __exit__(self, kind, err, tb):
        try:
            if err is None:
                try:
                    publish_folder(self.tmp, self.out)
                except OSError as failed:
                    raise write_error(self.out, failed) from None
                return False
            failed = failure_of(err, self.tmp)
            if failed is not None:
                raise write_error(self.out, failed, size_of(self.tmp), self.expected) from None
            return False
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
