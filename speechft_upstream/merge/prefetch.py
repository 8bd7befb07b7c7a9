"""Ask the kernel to start reading the merge's inputs before torch is even imported.

`import torch` takes about a second of CPU; with inputs not yet in the page cache, the disk would
sit idle for that second. posix_fadvise(WILLNEED) queues asynchronous read-ahead without copying
anything into this process, so reading from disk overlaps with the import. The inputs are
requested in alternating chunks, in the order the merge reads them (all files side by side, front
to back). Purely a hint: errors are ignored here and reported by the merge itself, and nothing
changes on a warm cache or where posix_fadvise does not exist. Must not import torch.
"""

import os
import threading

CHUNK = 64 << 20


def _advise(paths):
    handles = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            handles.append((fd, os.fstat(fd).st_size))
        offset = 0
        while any(offset < size for _, size in handles):
            for fd, size in handles:
                if offset < size:
                    os.posix_fadvise(fd, offset, min(CHUNK, size - offset), os.POSIX_FADV_WILLNEED)
            offset += CHUNK
    except OSError:
        pass
    finally:
        for fd, _ in handles:
            os.close(fd)


def start(paths):
    """Start read-ahead of ``paths`` on a daemon thread; returns at once (None where unsupported)."""
    if not hasattr(os, "posix_fadvise"):
        return None
    thread = threading.Thread(target=_advise, args=([str(p) for p in paths if p],), daemon=True)
    thread.start()
    return thread
