"""Tiny randomly initialised encoders in s3prl's converted format: the test and demo models.

Built with s3prl's own model classes (so the stock ``<family>_local`` upstreams load them):
2 transformer layers, 48 dims, and a narrow 7-layer CNN with the usual 320-sample stride.
DeCoAR 2.0 is not offered: s3prl hard-codes its size (768 dims, 12 layers).
"""

import torch

from speechft_upstream import checkpoint

TINY_ARCHS = ("hubert", "wav2vec2", "wavlm")

# Same strides as the Base models (5·2⁴·2² = 320 samples per frame), 32 channels instead of 512.
_CNN = "[(32,10,5)] + [(32,3,2)] * 4 + [(32,2,2)] * 2"

_ENCODER = dict(
    conv_feature_layers=_CNN,
    encoder_layers=2,
    encoder_embed_dim=48,
    encoder_ffn_embed_dim=96,
    encoder_attention_heads=4,
    conv_pos=16,
    conv_pos_groups=4,
    final_dim=16,
    extractor_mode="default",
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
)

N_CLUSTERS = 20  # HuBERT's first-iteration k-means targets in the tiny setting


def _hubert():
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
    model_cfg = dict(_ENCODER, label_rate=50.0)
    # fairseq Dictionary symbols: 4 specials, then the cluster ids.
    symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(N_CLUSTERS)]]
    model = HubertModel(
        merge_with_parent(HubertConfig, model_cfg),
        merge_with_parent(HubertPretrainingConfig, task_cfg),
        symbols,
    )
    return {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
            "dictionaries_symbols": symbols}


def _wav2vec2():
    from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = {"sample_rate": 16000, "normalize": False}
    model_cfg = dict(_ENCODER, latent_vars=8, latent_groups=2, latent_dim=0)
    model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, model_cfg))
    return {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict()}


def _wavlm():
    from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

    cfg = dict(_ENCODER, normalize=False, relative_position_embedding=True, num_buckets=16,
               max_distance=64, gru_rel_pos=True)
    cfg.pop("final_dim")
    model = WavLM(WavLMConfig(cfg))
    return {"cfg": cfg, "model": model.state_dict()}


_BUILDERS = {"hubert": _hubert, "wav2vec2": _wav2vec2, "wavlm": _wavlm}


def make_tiny(arch, seed=0):
    """The converted-format dict of a tiny ``arch`` encoder, deterministic for ``seed``."""
    torch.manual_seed(seed)
    state = _BUILDERS[arch]()
    weights = checkpoint.weights(state, arch)
    for name in list(weights):
        weights[name] = weights[name].detach().clone().contiguous()
    return state


def write_tiny(arch, path, seed=0):
    return checkpoint.save_atomic(make_tiny(arch, seed), path)
