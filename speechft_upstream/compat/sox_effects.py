"""The part of torchaudio.sox_effects that s3prl's datasets use, without libsox.

torchaudio 2.9 removed sox_effects; s3prl 0.4.18 still imports it (speech_commands,
sv_voxceleb1, quesst14, mos_prediction). Supported effects are the ones those datasets pass:
channels, rate, gain, norm, trim, silence. Any other effect is an error, never ignored.
"""

import torch

from speechft_upstream.compat import audio_io


def _db(value):
    return 10.0 ** (float(value) / 20.0)


def _peak_normalise(wav, target_db=0.0):
    peak = wav.abs().max()
    return wav if peak == 0 else wav * (_db(target_db) / peak)


def _seconds(value, sample_rate):
    value = str(value)
    if value.endswith("s"):
        return int(value[:-1])
    seconds = 0.0
    for part in value.split(":"):  # sox accepts [[hh:]mm:]ss.frac
        seconds = seconds * 60 + float(part)
    return int(round(seconds * sample_rate))


def _threshold(value):
    value = str(value)
    return float(value[:-1]) / 100.0 if value.endswith("%") else _db(value[:-1] if value.endswith("d") else value)


def _silence(wav, sample_rate, args):
    """`silence 1 DUR THR [-1 DUR THR]`: drop leading silence; with -1, also inner silences >= DUR."""
    above_periods, above_dur, above_thr = int(args[0]), args[1], args[2]
    loud = (wav.abs() > _threshold(above_thr)).any(dim=0)
    if above_periods > 0:
        idx = torch.nonzero(loud)
        start = int(idx[0]) if len(idx) else wav.shape[1]
        wav, loud = wav[:, start:], loud[start:]
    if len(args) >= 6 and int(args[3]) == -1:
        min_len = _seconds(args[4], sample_rate)
        quiet = (wav.abs() <= _threshold(args[5])).all(dim=0)
        keep = torch.ones_like(quiet)
        run_start = None
        for i, q in enumerate(quiet.tolist() + [False]):
            if q and run_start is None:
                run_start = i
            elif not q and run_start is not None:
                if i - run_start >= min_len:
                    keep[run_start + min_len // 2 : i] = False  # sox leaves the first half-duration
                run_start = None
        wav = wav[:, keep]
    return wav


def apply_effects_tensor(tensor, sample_rate, effects, channels_first=True):
    wav = tensor if channels_first else tensor.t()
    wav = wav.float()
    for effect in effects:
        name, args = effect[0], list(effect[1:])
        if name == "channels":
            if int(args[0]) != 1:
                raise ValueError(f"sox effect 'channels {args[0]}': only down-mixing to 1 is supported")
            wav = wav.mean(dim=0, keepdim=True)
        elif name == "rate":
            new_rate = int(float(args[0]))
            if new_rate != sample_rate:
                import torchaudio.functional as F

                wav = F.resample(wav, sample_rate, new_rate)
                sample_rate = new_rate
        elif name == "gain":
            if args and args[0] == "-n":
                wav = _peak_normalise(wav, args[1] if len(args) > 1 else 0.0)
            else:
                wav = wav * _db(args[0] if args else 0.0)
        elif name == "norm":
            wav = _peak_normalise(wav, args[0] if args else 0.0)
        elif name == "trim":
            start = _seconds(args[0], sample_rate)
            end = start + _seconds(args[1], sample_rate) if len(args) > 1 else wav.shape[1]
            wav = wav[:, start:end]
        elif name == "silence":
            wav = _silence(wav, sample_rate, args)
        else:
            raise ValueError(f"sox effect {name!r} is not supported by speechft's sox_effects replacement")
    return (wav if channels_first else wav.t()), sample_rate


def apply_effects_file(path, effects, normalize=True, channels_first=True, format=None):
    wav, sample_rate = audio_io.load(path, normalize=normalize)
    return apply_effects_tensor(wav, sample_rate, effects, channels_first=channels_first)


def effect_names():
    return ["channels", "rate", "gain", "norm", "trim", "silence"]
