"""Tiny randomly initialised encoders in s3prl's converted format: the test and demo models.

Built with s3prl's own model classes (so the stock ``<family>_local`` upstreams load them):
2 transformer layers, 48 dims, and a narrow 7-layer CNN with the usual 320-sample stride.
DeCoAR 2.0 is not among ``TINY_ARCHS``: s3prl hard-codes its size (768 dims, 12 layers), so its
upstream cannot load a tiny one; ``make_tiny_decoar2`` builds s3prl's own ``Decoar2`` at the tiny
size (for merging, which only needs its parameter names and its converted format).
"""

import torch

from speechft_upstream.checkpoints import files

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

DECOAR2_TINY = dict(encoder_embed_dim=48, encoder_layers=2, encoder_ffn_embed_dim=96, encoder_attention_heads=4,
                    conv_pos=16, conv_pos_groups=4, encoder_layerdrop=0.0)


def tiny_decoar2_module(seed=0):
    """s3prl's ``Decoar2`` at the tiny size (it reads its sizes from a module-level dict)."""
    from s3prl.upstream.decoar2 import decoar2

    saved = dict(decoar2.args)
    decoar2.args.update(DECOAR2_TINY)
    try:
        torch.manual_seed(seed)
        return decoar2.Decoar2()
    finally:
        decoar2.args.clear()
        decoar2.args.update(saved)


def make_tiny_decoar2(seed=0):
    """A tiny DeCoAR 2.0 in s3prl's converted format, ``{model: state_dict}``."""
    weights = {k: v.detach().clone().contiguous() for k, v in tiny_decoar2_module(seed).state_dict().items()}
    return {"model": weights}


def make_tiny(arch, seed=0):
    """The converted-format dict of a tiny ``arch`` encoder, deterministic for ``seed``."""
    torch.manual_seed(seed)
    state = _BUILDERS[arch]()
    weights = files.weights(state, arch)
    for name in list(weights):
        weights[name] = weights[name].detach().clone().contiguous()
    return state


def write_tiny(arch, path, seed=0):
    return files.save_atomic(make_tiny(arch, seed), path)


# --- the same tiny models in the layouts users hold before conversion ---------------------------
FORMATS = ("s3prl", "fairseq")


def _fairseq_dictionary(symbols):
    """A fairseq Dictionary's pickled state (fairseq/data/dictionary.py, 0.12.2), symbols given."""
    return {"bos_word": "<s>", "unk_word": "<unk>", "pad_word": "<pad>", "eos_word": "</s>",
            "symbols": list(symbols), "count": [1] * len(symbols),
            "indices": {s: i for i, s in enumerate(symbols)},
            "bos_index": 0, "pad_index": 1, "eos_index": 2, "unk_index": 3, "extra_special_symbols": None,
            "nspecial": 4}


def _dictionary_object(state):
    """An object that pickles as fairseq.data.dictionary.Dictionary (NEWOBJ + its __dict__)."""
    cls = _fairseq_global("fairseq.data.dictionary", "Dictionary")
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj


def _fairseq_global(module, name):
    """An object that pickle writes as GLOBAL `module name`: fairseq's own class where importable."""
    import importlib
    import sys
    import types

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        pass
    cls = type(name, (), {"__module__": module, "__qualname__": name})
    parts = module.split(".")
    for i in range(1, len(parts) + 1):  # pickle checks the name resolves: stand-in modules
        sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[module], name, cls)
    _STAND_INS.append(module)
    return cls


_STAND_INS = []


def _drop_stand_ins():
    import sys

    for module in _STAND_INS:
        parts = module.split(".")
        for i in range(len(parts), 0, -1):
            mod = sys.modules.get(".".join(parts[:i]))
            if mod is not None and getattr(mod, "__file__", None) is None and not hasattr(mod, "__path__"):
                del sys.modules[".".join(parts[:i])]
    _STAND_INS.clear()


def make_tiny_fairseq(arch, seed=0):
    """The tiny ``arch`` encoder in its original on-disk layout.

    HuBERT / wav2vec 2.0: fairseq's checkpoint layout (trainer.state_dict(), fairseq 0.12.2) with
    ``cfg`` as an omegaconf DictConfig (as hydra-era fairseq pickled it) holding full ``model`` /
    ``task`` sections (fairseq 0.12.2's defaults with the tiny sizes) and the usual other sections;
    HuBERT's label dictionary in ``task_state``. WavLM: Microsoft's ``{'cfg': dict, 'model': ...}``.
    The weights come from s3prl's own model classes built from exactly these sections.
    """
    from omegaconf import OmegaConf

    from speechft_upstream.checkpoints.convert_legacy import FAIRSEQ_0_12_2_DEFAULTS

    if arch == "wavlm":
        return make_tiny("wavlm", seed)
    table = FAIRSEQ_0_12_2_DEFAULTS[arch]
    model_cfg = dict(table["model"], **_ENCODER)
    task_cfg = dict(table["task"], data="/data/tiny", sample_rate=16000, normalize=False)
    torch.manual_seed(seed)
    if arch == "hubert":
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
        from s3prl.upstream.utils import merge_with_parent

        model_cfg["label_rate"] = task_cfg["label_rate"] = 50.0
        task_cfg["labels"] = ["km"]
        symbols = ["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(N_CLUSTERS)]
        model = HubertModel(merge_with_parent(HubertConfig, model_cfg),
                            merge_with_parent(HubertPretrainingConfig, task_cfg), [symbols])
        task_state = {"dictionaries": [_dictionary_object(_fairseq_dictionary(symbols))]}
        criterion = "hubert"
    else:
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model
        from s3prl.upstream.utils import merge_with_parent

        model_cfg.update(latent_vars=8, latent_groups=2, latent_dim=0)
        model = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, model_cfg))
        task_state = {}
        criterion = "wav2vec"
    cfg = OmegaConf.create({
        "_name": None,
        "common": {"_name": None, "seed": seed, "fp16": False, "tpu": False, "log_interval": 200},
        "distributed_training": {"_name": None, "distributed_world_size": 1},
        "dataset": {"_name": None, "num_workers": 1, "max_tokens": 1400000},
        "optimization": {"_name": None, "max_update": 400000, "lr": [0.0005], "update_freq": [1]},
        "checkpoint": {"_name": None, "save_dir": "checkpoints", "no_save_optimizer_state": True},
        "model": model_cfg,
        "task": task_cfg,
        "criterion": {"_name": criterion},
        "optimizer": {"_name": "adam", "adam_betas": "(0.9,0.98)", "adam_eps": 1e-06},
        "lr_scheduler": {"_name": "polynomial_decay", "warmup_updates": 32000},
    })
    OmegaConf.set_struct(cfg, True)
    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return {
        "args": None,
        "cfg": cfg,
        "model": weights,
        "criterion": None,
        "optimizer_history": [{"criterion_name": type(model).__name__.replace("Model", "Criterion"),
                               "optimizer_name": "FairseqAdam", "lr_scheduler_state": {"best": None},
                               "num_updates": 0}],
        "task_state": task_state,
        "extra_state": {"metrics": {}, "previous_training_time": 0.0,
                        "train_iterator": {"epoch": 1, "iterations_in_epoch": 0, "shuffle": True}},
    }


def write_tiny_format(arch, path, seed=0, fmt="s3prl"):
    if fmt == "s3prl":
        return write_tiny(arch, path, seed)
    try:
        return files.save_atomic(make_tiny_fairseq(arch, seed), path)
    finally:
        _drop_stand_ins()
