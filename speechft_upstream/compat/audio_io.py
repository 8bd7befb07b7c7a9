"""torchaudio.load / save / info backed by soundfile.

torchaudio >= 2.9 routes these through torchcodec + FFmpeg, which s3prl's datasets never asked
for; soundfile bundles libsndfile and reads WAV/FLAC/OGG, which is what SUPERB corpora hold.
Signatures follow torchaudio 2.x so s3prl's calls work unchanged.
"""

from dataclasses import dataclass

import numpy as np
import soundfile
import torch

_INT_SUBTYPES = {"PCM_16": "int16", "PCM_32": "int32", "PCM_U8": "uint8"}


@dataclass
class AudioMetaData:
    sample_rate: int
    num_frames: int
    num_channels: int
    bits_per_sample: int
    encoding: str


def info(uri, format=None, buffer_size=4096, backend=None):
    meta = soundfile.info(uri)
    bits = {"PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "PCM_U8": 8, "FLOAT": 32, "DOUBLE": 64}
    return AudioMetaData(
        sample_rate=meta.samplerate,
        num_frames=meta.frames,
        num_channels=meta.channels,
        bits_per_sample=bits.get(meta.subtype, 0),
        encoding=meta.subtype,
    )


def load(uri, frame_offset=0, num_frames=-1, normalize=True, channels_first=True,
         format=None, buffer_size=4096, backend=None):
    dtype = "float32"
    if not normalize:
        dtype = _INT_SUBTYPES.get(soundfile.info(uri).subtype, "float32")
    data, sample_rate = soundfile.read(
        uri, start=frame_offset, frames=num_frames, dtype=dtype, always_2d=True
    )
    wav = torch.from_numpy(np.ascontiguousarray(data.T if channels_first else data))
    return wav, sample_rate


def save(uri, src, sample_rate, channels_first=True, format=None, encoding=None,
         bits_per_sample=None, buffer_size=4096, backend=None, compression=None):
    data = src.detach().cpu()
    if data.dim() == 1:
        data = data.unsqueeze(0 if channels_first else 1)
    if channels_first:
        data = data.t()
    subtype = None
    if bits_per_sample == 16 or data.dtype == torch.int16:
        subtype = "PCM_16"
    elif bits_per_sample == 8:
        subtype = "PCM_U8"
    elif encoding == "PCM_S" and bits_per_sample in (24, 32):
        subtype = f"PCM_{bits_per_sample}"
    elif data.is_floating_point():
        # torchaudio wrote float tensors as 32-bit float WAV; keep that so nothing is quantised.
        subtype = "FLOAT" if str(uri).lower().endswith(".wav") else None
    soundfile.write(uri, data.numpy(), sample_rate, subtype=subtype, format=format)
