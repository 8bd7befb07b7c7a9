"""s3prl 0.4.18 on current torch / torchaudio / huggingface_hub, without editing s3prl.

``after_import(name, module)`` is called by the startup hook right after a watched module has
executed. Each fix checks first whether it is needed, so on an environment where s3prl already
works every step is a no-op. Only this package knows about s3prl's breakages.
"""

import importlib.util
import logging
import sys

log = logging.getLogger("speechft.compat")


def _fix_torchaudio_loader(utils):
    """torchaudio raises at import when its compiled ops exist but don't match the installed torch.

    Its own fallback when the library file is absent is pure-Python mode, which is all s3prl
    needs (kaldi fbank/mfcc, transforms, functional). Take that fallback for a load failure too.
    """
    original = utils._load_lib
    if getattr(original, "_speechft", False):
        return

    def _load_lib(lib):
        try:
            return original(lib)
        except OSError as err:
            log.debug("torchaudio extension %s not loadable (%s); pure-Python mode", lib, err)
            return False

    _load_lib._speechft = True
    utils._load_lib = _load_lib


def _torchaudio_version(ta):
    parts = ta.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def _fix_torchaudio(ta):
    if not hasattr(ta, "set_audio_backend"):
        ta.set_audio_backend = lambda backend=None: None  # soundfile is the only backend now
        ta.get_audio_backend = lambda: "soundfile"
        ta.list_audio_backends = lambda: ["soundfile"]
    if _torchaudio_version(ta) >= (2, 9):
        # load/save route through torchcodec + FFmpeg from 2.9 on; info is gone.
        from speechft_upstream.compat import audio_io

        ta.load, ta.save, ta.info = audio_io.load, audio_io.save, audio_io.info
    if importlib.util.find_spec("torchaudio.sox_effects") is None:
        from speechft_upstream.compat import sox_effects

        sys.modules["torchaudio.sox_effects"] = sox_effects
        ta.sox_effects = sox_effects


def _fix_huggingface_hub(hf):
    """s3prl's runner imports HfFolder and Repository, removed in huggingface_hub 1.0.

    Only its --push_to_hf_hub / -u from the hub paths use them; those fail with a clear
    message instead of making every run die at import.
    """
    if not hasattr(hf, "HfFolder"):

        class HfFolder:
            @staticmethod
            def get_token():
                return hf.get_token()

            @staticmethod
            def save_token(token):
                hf.login(token=token)

        hf.HfFolder = HfFolder
    if not hasattr(hf, "Repository"):

        class Repository:
            def __init__(self, *args, **kwargs):
                raise RuntimeError(
                    "huggingface_hub.Repository was removed in huggingface_hub 1.0; "
                    "s3prl's --push_to_hf_hub needs huggingface_hub<1"
                )

        hf.Repository = Repository


def _fix_s3prl(s3prl):
    # Runner checkpoints (states-*.ckpt, dev-best.ckpt) pickle the argparse.Namespace of the
    # run; torch >= 2.6 loads with weights_only=True. Allow exactly that class, nothing more.
    import argparse

    import torch.serialization

    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals([argparse.Namespace])
    install_excepthook()


def _add_schedules(schedulers):
    from speechft_upstream.finetune.schedules import get_stable_finetuning_schedule

    # s3prl looks schedulers up with eval(f"get_{name}") in this module's namespace
    schedulers.get_stable_finetuning_schedule = get_stable_finetuning_schedule


def _hook_runner(runner_module):
    from speechft_upstream.compat import runner

    runner.install(runner_module)


def _register_upstreams(hub):
    from speechft_upstream import hubconf
    from speechft_upstream.upstream import registry

    hubconf.register(hub)
    registry.register_all(hub)


def _ctc_corpus(expert):
    from speechft_upstream.compat import ctc_corpus

    ctc_corpus.install(expert)


def _catalyst_standin(package):
    from speechft_upstream.compat import catalyst_standin

    catalyst_standin.install()


def _extra_downstreams(package):
    from speechft_upstream.compat import downstreams

    downstreams.install(package)


def _voxceleb1_cache(dataset):
    from speechft_upstream.compat import voxceleb1_cache

    voxceleb1_cache.install(dataset)


def _emotion_expert(expert):
    from speechft_upstream.compat import emotion_dev

    emotion_dev.install(expert)


def _diarization_expert(expert):
    from speechft_upstream.compat import sd_qbe

    sd_qbe.install_diarization(expert)


def _quesst14_expert(expert):
    from speechft_upstream.compat import sd_qbe

    sd_qbe.install_quesst14(expert)


def _sv_voxceleb1(name):
    def fix(module):
        from speechft_upstream.compat import sv_voxceleb1

        getattr(sv_voxceleb1, f"install_{name}")(module)

    return fix


_FIXES = {
    "torchaudio._extension.utils": _fix_torchaudio_loader,
    "torchaudio": _fix_torchaudio,
    "huggingface_hub": _fix_huggingface_hub,
    "s3prl": _fix_s3prl,
    "s3prl.hub": _register_upstreams,
    "s3prl.schedulers": _add_schedules,
    "s3prl.downstream": _extra_downstreams,
    "s3prl.downstream.runner": _hook_runner,
    "s3prl.downstream.ctc.expert": _ctc_corpus,
    "s3prl.downstream.speech_commands": _catalyst_standin,
    "s3prl.downstream.voxceleb1.dataset": _voxceleb1_cache,
    "s3prl.downstream.emotion.expert": _emotion_expert,
    "s3prl.downstream.diarization.expert": _diarization_expert,
    "s3prl.downstream.quesst14_dtw.expert": _quesst14_expert,
    "s3prl.downstream.sv_voxceleb1": _sv_voxceleb1("package"),
    "s3prl.downstream.sv_voxceleb1.dataset": _sv_voxceleb1("dataset"),
    "s3prl.downstream.sv_voxceleb1.expert": _sv_voxceleb1("expert"),
}


def after_import(name, module):
    _FIXES[name](module)


def install_excepthook():
    """Uncaught SpeechFTError -> one line on stderr and exit status 1, not a traceback wall."""
    previous = sys.excepthook
    if getattr(previous, "_speechft", False):
        return

    def hook(exc_type, exc, tb):
        if getattr(exc_type, "speechft_user_error", False):
            sys.stderr.write(f"speechft: error: {exc}\n")
            sys.stderr.flush()
            return
        previous(exc_type, exc, tb)

    hook._speechft = True
    sys.excepthook = hook
