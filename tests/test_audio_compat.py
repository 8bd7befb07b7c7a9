"""soundfile-backed torchaudio.load/save/info and the sox effects s3prl's datasets use."""

import math

import numpy as np
import pytest
import soundfile
import torch
import torchaudio
import torchaudio.sox_effects as fx


def _tone(seconds=0.5, rate=16000, freq=440.0, amp=0.5):
    t = torch.arange(int(seconds * rate)) / rate
    return amp * torch.sin(2 * math.pi * freq * t)


def test_save_load_info_roundtrip(tmp_path):
    wav = torch.stack([_tone(), _tone(freq=220.0)])
    path = tmp_path / "a.wav"
    torchaudio.save(str(path), wav, 16000)
    loaded, rate = torchaudio.load(str(path))
    assert rate == 16000 and loaded.shape == (2, 8000) and loaded.dtype == torch.float32
    assert torch.allclose(loaded, wav, atol=1e-6)  # float WAV: no quantisation
    meta = torchaudio.info(str(path))
    assert (meta.sample_rate, meta.num_frames, meta.num_channels) == (16000, 8000, 2)
    part, _ = torchaudio.load(str(path), frame_offset=100, num_frames=50)
    assert torch.equal(part, loaded[:, 100:150])


def test_load_pcm16_written_by_soundfile(tmp_path):
    path = tmp_path / "b.flac"
    data = (np.sin(np.arange(1600) / 5) * 8000).astype(np.int16)
    soundfile.write(str(path), data, 8000, subtype="PCM_16")
    wav, rate = torchaudio.load(str(path))
    assert rate == 8000 and wav.shape == (1, 1600)
    assert torch.allclose(wav[0], torch.from_numpy(data / 32768.0).float(), atol=1e-6)
    raw, _ = torchaudio.load(str(path), normalize=False)
    assert raw.dtype == torch.int16 and torch.equal(raw[0], torch.from_numpy(data))


def test_speech_commands_effects(tmp_path):
    """["channels","1"],["rate","16000"],["gain","-3.0"] on an 8 kHz stereo file."""
    path = tmp_path / "c.wav"
    stereo = torch.stack([_tone(rate=8000, amp=0.4), _tone(rate=8000, amp=0.2)])
    torchaudio.save(str(path), stereo, 8000)
    wav, rate = fx.apply_effects_file(str(path), [["channels", "1"], ["rate", "16000"], ["gain", "-3.0"]])
    assert rate == 16000 and wav.shape == (1, 8000)
    expected_peak = 0.3 * 10 ** (-3 / 20)
    assert abs(wav.abs().max().item() - expected_peak) < 0.01


def test_norm_trim_and_silence():
    rate = 16000
    loud = _tone(0.3, amp=0.5)
    quiet = torch.zeros(int(0.5 * rate))
    wav = torch.cat([quiet, loud, quiet, loud]).unsqueeze(0)
    normed, _ = fx.apply_effects_tensor(wav, rate, [["norm"]])
    assert abs(normed.abs().max().item() - 1.0) < 1e-6
    trimmed, _ = fx.apply_effects_tensor(wav, rate, [["trim", "0.5", "0.3"]])
    assert trimmed.shape[1] == int(0.3 * rate)
    # sv_voxceleb1: drop leading silence, shorten inner silences longer than 0.1 s.
    cut, _ = fx.apply_effects_tensor(wav, rate, [["silence", "1", "0.1", "0.1%", "-1", "0.1", "0.1%"]])
    assert cut[0, 0].abs() > 0 or cut[0, 1].abs() > 0  # starts at the first loud sample
    assert 2 * len(loud) <= cut.shape[1] < 2 * len(loud) + int(0.1 * rate)


def test_unknown_effect_is_an_error():
    with pytest.raises(ValueError, match="'reverb' is not supported"):
        fx.apply_effects_tensor(torch.zeros(1, 100), 16000, [["reverb"]])
