"""s3prl's voxceleb1 (SID) file-list cache, keyed by the data it lists.

s3prl 0.4.18 caches the file list of each split as ``<CACHE_PATH>/<split>.pkl``, with CACHE_PATH
inside the installed package and the split name as the only key. A second SID data set (another
corpus, another meta_data file) silently reuses the first one's list: wrong files, wrong labels,
no error. The wrapper below puts each call's cache in a subfolder named after the absolute
``file_path``, the ``meta_data`` path and that file's size and mtime, so a different or edited
data set gets its own list. CACHE_PATH itself stays what it was (a wrapper that moves it, like
downstream_recipes/recipe_tool.py, still decides where the subfolders go).
"""

import functools
import hashlib
import os


def cache_key(file_path, meta_data):
    meta = os.path.abspath(meta_data)
    try:
        st = os.stat(meta)
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "missing"  # s3prl's own open() reports the missing file
    text = "\n".join((os.path.abspath(file_path), meta, stamp))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def install(module):
    cls = module.SpeakerClassifiDataset
    if getattr(cls.__init__, "_speechft", False):
        return
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self, mode, file_path, meta_data, *args, **kwargs):
        base = module.CACHE_PATH
        module.CACHE_PATH = os.path.join(base, cache_key(file_path, meta_data), "")
        try:
            original(self, mode, file_path, meta_data, *args, **kwargs)
        finally:
            module.CACHE_PATH = base

    __init__._speechft = True
    cls.__init__ = __init__
