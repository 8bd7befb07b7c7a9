"""The upstream entries s3prl's runner finds as ``-u speechft_<family>``.

Each is called by the runner as ``entry(ckpt=-k, model_config=-g, refresh=-r)``. ``-k`` takes any
converted checkpoint of the family (θ0, θ′ or θ̂). With no ``-k``, HuBERT and wav2vec 2.0 load the
authors' released Speech-FT encoders (TED-LIUM 3 ASR, merged at α = 0.25), downloaded once and
cached through s3prl's own download helper.
"""

from speechft_upstream.upstream import expert

_GDRIVE = "https://drive.google.com/uc?export=download&confirm=t&id={}"
RELEASED = {
    "hubert": _GDRIVE.format("13yiv5-6SY4dIMarCidJ0FKBPcID1iKG_"),
    "wav2vec2": _GDRIVE.format("1d8412DKVFeS8vRzE9qL-gGz4IFs2EjQ9"),
}


def _resolve(family, ckpt, refresh):
    if ckpt is None or ckpt == "":
        if family not in RELEASED:
            from speechft_upstream.errors import SpeechFTError

            raise SpeechFTError(f"speechft_{family}: no released Speech-FT model; give a checkpoint with -k")
        ckpt = RELEASED[family]
    if str(ckpt).startswith(("http://", "https://")):
        from s3prl.util.download import _urls_to_filepaths

        ckpt = _urls_to_filepaths(str(ckpt), refresh=refresh)
    return ckpt


def _entry(family, ckpt, model_config, refresh, kwargs):
    return expert.build(family, _resolve(family, ckpt, refresh), model_config, **kwargs)


def speechft_hubert(ckpt=None, model_config=None, refresh=False, **kwargs):
    """HuBERT (converted format); default: the released Speech-FT HuBERT Base."""
    return _entry("hubert", ckpt, model_config, refresh, kwargs)


def speechft_wav2vec2(ckpt=None, model_config=None, refresh=False, **kwargs):
    """wav2vec 2.0 (converted format); default: the released Speech-FT wav2vec 2.0 Base."""
    return _entry("wav2vec2", ckpt, model_config, refresh, kwargs)


def speechft_wavlm(ckpt=None, model_config=None, refresh=False, **kwargs):
    """WavLM ({cfg, model} format); -k is required."""
    return _entry("wavlm", ckpt, model_config, refresh, kwargs)


def speechft_decoar2(ckpt=None, model_config=None, refresh=False, **kwargs):
    """DeCoAR 2.0 ({model} format); -k is required."""
    return _entry("decoar2", ckpt, model_config, refresh, kwargs)


ENTRIES = {
    "speechft_hubert": speechft_hubert,
    "speechft_wav2vec2": speechft_wav2vec2,
    "speechft_wavlm": speechft_wavlm,
    "speechft_decoar2": speechft_decoar2,
}


def register(hub):
    for name, entry in ENTRIES.items():
        setattr(hub, name, entry)
