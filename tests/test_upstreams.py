"""speechft_* upstreams: names on s3prl.hub, hub-style loading, parity with stock *_local."""

import pytest
import torch

import s3prl.hub as hub
from speechft_upstream import hubconf
from speechft_upstream.errors import SpeechFTError

FAMILIES = ["hubert", "wav2vec2", "wavlm"]


def test_names_on_s3prl_hub():
    for name in ("speechft_hubert", "speechft_wav2vec2", "speechft_wavlm", "speechft_decoar2"):
        assert callable(getattr(hub, name))
    assert "speechft_hubert" in hub.options()


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_equal_stock_local(family, tiny_dir):
    ckpt = str(tiny_dir / f"{family}.pt")
    ours = getattr(hub, f"speechft_{family}")(ckpt=ckpt).eval()
    stock = getattr(hub, f"{family}_local")(ckpt=ckpt).eval()
    generator = torch.Generator().manual_seed(1)
    wavs = [torch.randn(16000, generator=generator), torch.randn(11000, generator=generator)]
    with torch.no_grad():
        a, b = ours(wavs)["hidden_states"], stock(wavs)["hidden_states"]
    assert len(a) == len(b) == 3  # CNN output projection + 2 transformer layers
    assert a[0].shape == (2, 49, 48)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert ours.get_downsample_rates("hidden_states") == 320
    assert list(ours.state_dict()) == list(stock.state_dict())


def test_hubconf_python_entry(tiny_hubert):
    model = hubconf.speechft_hubert(ckpt=str(tiny_hubert))
    assert type(model).__name__ == "SpeechFTHubertExpert"
    assert model.speechft_family == "hubert"


def test_model_config_settings(tmp_path, tiny_hubert):
    cfg = tmp_path / "upstream.yaml"
    cfg.write_text("beta: 0.2\n")
    model = hubconf.speechft_hubert(ckpt=str(tiny_hubert), model_config=str(cfg))
    assert model.speechft_settings == {"beta": 0.2}
    cfg.write_text("- not a mapping\n")
    with pytest.raises(SpeechFTError, match="must be a YAML mapping"):
        hubconf.speechft_hubert(ckpt=str(tiny_hubert), model_config=str(cfg))


@pytest.mark.parametrize("family", ["hubert", "wav2vec2"])
def test_default_is_released_model_through_s3prl_download(family, tiny_dir, monkeypatch):
    """No -k: the released Speech-FT encoder, fetched by s3prl's own helper (stubbed: no network)."""
    import s3prl.util.download as download

    calls = []

    def fake_urls_to_filepaths(url, refresh=False):
        calls.append((url, refresh))
        return str(tiny_dir / f"{family}.pt")

    monkeypatch.setattr(download, "_urls_to_filepaths", fake_urls_to_filepaths)
    model = getattr(hub, f"speechft_{family}")(refresh=True)
    assert model.speechft_family == family
    assert calls == [(hubconf.RELEASED[family], True)]
    ids = {"hubert": "13yiv5-6SY4dIMarCidJ0FKBPcID1iKG_", "wav2vec2": "1d8412DKVFeS8vRzE9qL-gGz4IFs2EjQ9"}
    assert ids[family] in calls[0][0]


def test_no_released_wavlm_needs_k():
    with pytest.raises(SpeechFTError, match="give a checkpoint with -k"):
        hub.speechft_wavlm()
