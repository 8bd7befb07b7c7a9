"""Startup hook, run from ``speechft_upstream.pth`` in every Python process.

It only puts a small finder on ``sys.meta_path``. Nothing is imported and nothing is patched
until one of the watched modules (torchaudio, huggingface_hub, s3prl) is imported; then
``compat.after_import`` runs right after that module has executed, before the importer sees it.
That is how the unmodified ``python -m s3prl.run_downstream`` gets the compatibility fixes and
the ``speechft_*`` upstream names without any edit to s3prl.

Set ``SPEECHFT_NO_AUTOLOAD=1`` to switch the hook off (the patched-source workflow uses it).
"""

import os
import sys

# Module name -> why it is watched (the action lives in compat.after_import).
WATCHED = (
    "torchaudio._extension.utils",  # its loader raises when the compiled ops don't match torch
    "torchaudio",  # s3prl calls names removed in torchaudio 2.9
    "huggingface_hub",  # s3prl imports names removed in huggingface_hub 1.0
    "s3prl",  # runner checkpoints need argparse.Namespace on torch's safe-load list
    "s3prl.hub",  # where `-u NAME` is looked up: add the speechft upstreams
    "s3prl.schedulers",  # where scheduler names are looked up: add stable_finetuning_schedule
    "s3prl.downstream",  # downstreams s3prl lacks (asr_ted) join its package path
    "s3prl.downstream.runner",  # stable fine-tuning's step budget; DDP on CPU
    "s3prl.downstream.ctc.expert",  # PyPI s3prl lacks the ctc corpus package (PR)
    "s3prl.downstream.speech_commands",  # before its expert imports catalyst (KS)
    "s3prl.downstream.voxceleb1.dataset",  # its file-list cache is keyed by split only (SID)
    "s3prl.downstream.emotion.expert",  # the corpus's extra ER dev list joins the carved dev (ER)
    "s3prl.downstream.diarization.expert",  # padded test posteriors past the recording's end (SD)
    "s3prl.downstream.quesst14_dtw.expert",  # os.cpu_count() DTW processes (QbE)
    "s3prl.downstream.sv_voxceleb1",  # before its dataset imports the absent `sox` (ASV)
    "s3prl.downstream.sv_voxceleb1.dataset",  # 12 joblib workers; length cache in site-packages (ASV)
    "s3prl.downstream.sv_voxceleb1.expert",  # .cuda() on the attention mask; dev scored on test trials
)


class _HookedLoader:
    """Delegates everything to the real loader; runs the hook after the module executed."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        from speechft_upstream import compat

        compat.after_import(self._name, module)


class _PostImportFinder:
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _HookedLoader(spec.loader, fullname)
        return spec

    def invalidate_caches(self):
        pass


def install():
    if os.environ.get("SPEECHFT_NO_AUTOLOAD"):
        return
    if any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _PostImportFinder())
    # A watched module imported before the hook (rare: sitecustomize) is handled at once.
    already = [name for name in WATCHED if name in sys.modules]
    if already:
        from speechft_upstream import compat

        for name in already:
            compat.after_import(name, sys.modules[name])


install()
