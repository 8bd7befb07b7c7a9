"""Original fairseq HuBERT / wav2vec 2.0 checkpoints and WavLM's original file -> s3prl's format.

What s3prl 0.4.18 writes (``upstream/{hubert,wav2vec2}/convert.py``), without importing fairseq:

- HuBERT:      {task_cfg, model_cfg, model_weight, dictionaries_symbols}
- wav2vec 2.0: {task_cfg, model_cfg, model_weight}
- WavLM:       {cfg, model} (s3prl has no converter: its converted files are Microsoft's originals)

s3prl gets there through fairseq's ``load_checkpoint_to_cpu`` (unpickle everything, upgrade old
layouts) and ``OmegaConf.to_container(state["cfg"])`` (no resolving): ``task_cfg`` / ``model_cfg``
are the ``task`` / ``model`` sections as plain containers, ``dictionaries_symbols`` the ``symbols``
of each ``fairseq.data.dictionary.Dictionary`` in ``task_state["dictionaries"]``.

Safe reading. The file is unpickled by torch's weights-only unpickler, which runs nothing but
tensor rebuilding and the globals allowed here (``ALLOWED_GLOBALS``). What fairseq files pickle
besides tensors and builtin containers:

- ``argparse.Namespace``: ``args`` of files from before fairseq's hydra configs (the real class:
  unpickling it only sets attributes);
- omegaconf's ``DictConfig`` / ``ListConfig`` / ``ContainerMetadata`` / ``Metadata`` / value nodes,
  with ``typing.Any``, ``collections.defaultdict`` (the metadata's ``resolver_cache``) and
  builtin types as metadata: files whose ``cfg`` was pickled as a DictConfig;
- ``fairseq.data.dictionary.Dictionary``: HuBERT's ``task_state["dictionaries"]``;
- numpy scalars (``numpy.core.multiarray.scalar``, ``numpy.dtype``) in ``extra_state`` metrics.

None of these is unpickled as the real class (except Namespace): each name is bound to an inert
record that only keeps the state it is given (no ``__setstate__`` of omegaconf or fairseq runs, no
numpy object is built), and the records are then read as data. Any other global is refused with
one line, before anything in it could run. A fairseq 0.12.2 file is plain containers (its trainer
saves ``OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)``); older hydra-era files and
the ones ``speechft make-tiny --format fairseq`` writes hold a pickled DictConfig.
"""

import argparse
import ast
import copy

from speechft_upstream import checkpoint
from speechft_upstream.errors import SpeechFTError

CONVERTIBLE = ("hubert", "wav2vec2", "wavlm")


class _Record:
    """An inert stand-in for a pickled object: remembers constructor args and state, runs nothing."""

    _name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.__dict__["_args"] = args
        self.__dict__["_state"] = None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __setitem__(self, key, value):  # a pickled defaultdict's items
        pass

    def __repr__(self):
        return f"<{self._name} (not unpickled)>"


def _record(name):
    return type(name.rsplit(".", 1)[-1], (_Record,), {"_name": name, "__module__": __name__})


class _Marker:
    """A global that pickles only refer to (typing.Any, builtin types as metadata); not callable."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


_OMEGACONF = [
    f"omegaconf.{name}" for name in (
        "dictconfig.DictConfig", "listconfig.ListConfig", "base.ContainerMetadata", "base.Metadata",
        "nodes.AnyNode", "nodes.StringNode", "nodes.IntegerNode", "nodes.FloatNode",
        "nodes.BooleanNode", "nodes.BytesNode", "nodes.PathNode",
    )
]
_RECORDS = {name: _record(name) for name in [
    *_OMEGACONF,
    "collections.defaultdict",
    "fairseq.data.dictionary.Dictionary",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.dtype",
]}
_MARKERS = {name: _Marker(name) for name in (
    "typing.Any", "typing.Dict", "typing.List",
    "builtins.dict", "builtins.list", "builtins.int", "builtins.float", "builtins.str",
    "builtins.bool", "builtins.bytes", "builtins.object",
)}

# (object, the "module.name" a pickle refers to it by), for torch.serialization.safe_globals.
ALLOWED_GLOBALS = (
    argparse.Namespace,
    *[(obj, name) for name, obj in _RECORDS.items()],
    *[(obj, name) for name, obj in _MARKERS.items()],
)


def _is(obj, name):
    return isinstance(obj, _RECORDS[name])


def plain(obj, path="cfg"):
    """Records of omegaconf containers -> plain dict / list, as OmegaConf.to_container (unresolved)."""
    if isinstance(obj, _Record):
        state = obj._state if isinstance(obj._state, dict) else {}
        if _is(obj, "omegaconf.dictconfig.DictConfig") or _is(obj, "omegaconf.listconfig.ListConfig"):
            content = state.get("_content")
            if isinstance(content, dict):
                return {k: plain(v, f"{path}.{k}") for k, v in content.items()}
            if isinstance(content, list):
                return [plain(v, f"{path}[{i}]") for i, v in enumerate(content)]
            return content  # None, an interpolation string or "???"
        if obj._name.startswith("omegaconf.nodes."):
            return plain(state.get("_val"), path)
        raise SpeechFTError(f"{path}: holds a {obj._name}, not configuration data")
    if isinstance(obj, dict):
        return {k: plain(v, f"{path}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [plain(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    return obj


def read(path):
    """The unpickled file: a dict, with the inert records described above where it held objects."""
    return checkpoint.load(path, allowed=ALLOWED_GLOBALS)


def detect(state, path):
    """'hubert', 'wav2vec2' or 'wavlm' for a convertible original file; else one-line SpeechFTError."""
    if not isinstance(state, dict):
        raise SpeechFTError(f"{path}: not a fairseq or WavLM checkpoint (top level is {type(state).__name__})")
    keys = set(state)
    if "model" not in keys or not isinstance(state["model"], dict):
        try:
            family = checkpoint.detect_family(state, path)
        except SpeechFTError:
            family = None
        if family:
            raise SpeechFTError(f"{path}: is already an s3prl converted {family} checkpoint; nothing to convert")
        raise SpeechFTError(
            f"{path}: not a fairseq or WavLM checkpoint (no 'model' weights; top-level keys: "
            f"{', '.join(sorted(map(str, keys))[:8])})"
        )
    args, cfg = state.get("args"), state.get("cfg")
    if isinstance(args, argparse.Namespace) and cfg is None:
        name = getattr(args, "arch", None)
    elif cfg is not None:
        cfg = plain(cfg)
        if not isinstance(cfg, dict):
            raise SpeechFTError(f"{path}: its 'cfg' is a {type(cfg).__name__}, not a configuration")
        model = cfg.get("model")
        if isinstance(model, dict):
            name = model.get("_name")
        elif isinstance(model, argparse.Namespace):
            name = getattr(model, "_name", None) or getattr(model, "arch", None)
        elif "model" not in cfg and not keys & {"task_state", "optimizer_history", "args"}:
            return "wavlm"  # Microsoft's WavLM file: {'cfg': WavLMConfig fields, 'model': weights}
        else:
            name = None
    else:
        raise SpeechFTError(f"{path}: not a fairseq or WavLM checkpoint (neither 'cfg' nor 'args')")
    if name == "hubert":
        return "hubert"
    if name == "wav2vec2":
        return "wav2vec2"
    raise SpeechFTError(
        f"{path}: is a fairseq {name!r} checkpoint; only pre-trained HuBERT ('hubert') and "
        "wav2vec 2.0 ('wav2vec2') models convert"
    )


def _upgrade_cfg(cfg):
    """fairseq's _upgrade_state_dict on hydra configs (the parts that reach task / model)."""
    task = cfg.get("task")
    if isinstance(task, dict) and isinstance(task.get("eval_wer_config"), dict) \
            and isinstance(task["eval_wer_config"].get("print_alignment"), bool):
        task["eval_wer_config"]["print_alignment"] = "hard"
    return cfg


def _symbols(state, path):
    dicts = (state.get("task_state") or {}).get("dictionaries")
    if not isinstance(dicts, list) or not dicts:
        raise SpeechFTError(f"{path}: HuBERT checkpoint without task_state['dictionaries'] (its label dictionaries)")
    symbols = []
    for d in dicts:
        data = d._state if _is(d, "fairseq.data.dictionary.Dictionary") else d
        sym = data.get("symbols") if isinstance(data, dict) else None
        if not isinstance(sym, list) or not all(isinstance(s, str) for s in sym):
            raise SpeechFTError(f"{path}: task_state['dictionaries'] holds no fairseq Dictionary symbols")
        symbols.append(list(sym))
    return symbols


def convert_state(state, path="checkpoint"):
    """(family, converted dict) for an unpickled original file."""
    family = detect(state, path)
    weights = state["model"]
    if family == "wavlm":
        return family, {"cfg": plain(state["cfg"]), "model": weights}
    if state.get("cfg") is not None:
        cfg = _upgrade_cfg(copy.deepcopy(plain(state["cfg"])))
    else:
        cfg = _cfg_from_args(state["args"], family, path)
    for section in ("task", "model"):
        if not isinstance(cfg.get(section), dict):
            raise SpeechFTError(f"{path}: its cfg has no '{section}' section")
    out = {"task_cfg": cfg["task"], "model_cfg": cfg["model"], "model_weight": weights}
    if family == "hubert":
        out["dictionaries_symbols"] = _symbols(state, path)
    return family, out


def convert(src, dst, force=False):
    """Convert ``src`` into ``dst`` (atomically); returns (family, dst)."""
    from pathlib import Path

    dst = Path(dst)
    if dst.exists() and not force:
        raise SpeechFTError(f"{dst}: exists; pass --force to replace it")
    if Path(src).resolve() == dst.resolve():
        raise SpeechFTError(f"{dst}: is the input file; write the conversion elsewhere")
    family, out = convert_state(read(src), src)
    checkpoint.save_atomic(out, dst)
    return family, dst


# --- files from before fairseq's hydra configs: {'args': argparse.Namespace, 'model': ...} ---
# fairseq turns `args` into a config (convert_namespace_to_omegaconf): the model's and the task's
# dataclass defaults, overridden by the attributes `args` has (with _override_attr's coercions).
# The defaults below are what fairseq 0.12.2 gives for a Namespace with only arch/task/data,
# interpolations resolved as it resolves them (tests/test_fairseq.py compares with fairseq).
FAIRSEQ_0_12_2_DEFAULTS = {'wav2vec2': {'model': {'_name': 'wav2vec2',
                        'extractor_mode': 'default',
                        'encoder_layers': 12,
                        'encoder_embed_dim': 768,
                        'encoder_ffn_embed_dim': 3072,
                        'encoder_attention_heads': 12,
                        'activation_fn': 'gelu',
                        'layer_type': 'transformer',
                        'dropout': 0.1,
                        'attention_dropout': 0.1,
                        'activation_dropout': 0.0,
                        'encoder_layerdrop': 0.0,
                        'dropout_input': 0.0,
                        'dropout_features': 0.0,
                        'final_dim': 0,
                        'layer_norm_first': False,
                        'conv_feature_layers': '[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + '
                                               '[(512,2,2)]',
                        'conv_bias': False,
                        'logit_temp': 0.1,
                        'quantize_targets': False,
                        'quantize_input': False,
                        'same_quantizer': False,
                        'target_glu': False,
                        'feature_grad_mult': 1.0,
                        'quantizer_depth': 1,
                        'quantizer_factor': 3,
                        'latent_vars': 320,
                        'latent_groups': 2,
                        'latent_dim': 0,
                        'mask_length': 10,
                        'mask_prob': 0.65,
                        'mask_selection': 'static',
                        'mask_other': 0.0,
                        'no_mask_overlap': False,
                        'mask_min_space': 1,
                        'require_same_masks': True,
                        'mask_dropout': 0.0,
                        'mask_channel_length': 10,
                        'mask_channel_prob': 0.0,
                        'mask_channel_before': False,
                        'mask_channel_selection': 'static',
                        'mask_channel_other': 0.0,
                        'no_mask_channel_overlap': False,
                        'mask_channel_min_space': 1,
                        'num_negatives': 100,
                        'negatives_from_everywhere': False,
                        'cross_sample_negatives': 0,
                        'codebook_negatives': 0,
                        'conv_pos': 128,
                        'conv_pos_groups': 16,
                        'pos_conv_depth': 1,
                        'latent_temp': [2.0, 0.5, 0.999995],
                        'max_positions': 100000,
                        'checkpoint_activations': False,
                        'required_seq_len_multiple': 2,
                        'crop_seq_to_multiple': 1,
                        'depthwise_conv_kernel_size': 31,
                        'attn_type': '',
                        'pos_enc_type': 'abs',
                        'fp16': False},
              'task': {'_name': 'audio_pretraining',
                       'data': '',
                       'labels': None,
                       'binarized_dataset': False,
                       'sample_rate': 16000,
                       'normalize': False,
                       'enable_padding': False,
                       'max_sample_size': None,
                       'min_sample_size': None,
                       'num_batch_buckets': 0,
                       'precompute_mask_indices': False,
                       'inferred_w2v_config': None,
                       'tpu': True,
                       'text_compression_level': 'none'}},
 'hubert': {'model': {'_name': 'hubert',
                      'label_rate': -1.0,
                      'extractor_mode': 'default',
                      'encoder_layers': 12,
                      'encoder_embed_dim': 768,
                      'encoder_ffn_embed_dim': 3072,
                      'encoder_attention_heads': 12,
                      'activation_fn': 'gelu',
                      'layer_type': 'transformer',
                      'dropout': 0.1,
                      'attention_dropout': 0.1,
                      'activation_dropout': 0.0,
                      'encoder_layerdrop': 0.0,
                      'dropout_input': 0.0,
                      'dropout_features': 0.0,
                      'final_dim': 0,
                      'untie_final_proj': False,
                      'layer_norm_first': False,
                      'conv_feature_layers': '[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2',
                      'conv_bias': False,
                      'logit_temp': 0.1,
                      'target_glu': False,
                      'feature_grad_mult': 1.0,
                      'mask_length': 10,
                      'mask_prob': 0.65,
                      'mask_selection': 'static',
                      'mask_other': 0.0,
                      'no_mask_overlap': False,
                      'mask_min_space': 1,
                      'mask_channel_length': 10,
                      'mask_channel_prob': 0.0,
                      'mask_channel_selection': 'static',
                      'mask_channel_other': 0.0,
                      'no_mask_channel_overlap': False,
                      'mask_channel_min_space': 1,
                      'conv_pos': 128,
                      'conv_pos_groups': 16,
                      'latent_temp': [2.0, 0.5, 0.999995],
                      'skip_masked': False,
                      'skip_nomask': False,
                      'checkpoint_activations': False,
                      'required_seq_len_multiple': 2,
                      'depthwise_conv_kernel_size': 31,
                      'attn_type': '',
                      'pos_enc_type': 'abs',
                      'fp16': False},
            'task': {'_name': 'hubert_pretraining',
                     'data': '',
                     'fine_tuning': False,
                     'labels': ['ltr'],
                     'label_dir': None,
                     'label_rate': -1.0,
                     'sample_rate': 16000,
                     'normalize': False,
                     'enable_padding': False,
                     'max_keep_size': None,
                     'max_sample_size': None,
                     'min_sample_size': None,
                     'single_target': False,
                     'random_crop': True,
                     'pad_audio': False}}}

_TASKS = {"wav2vec2": "audio_pretraining", "hubert": "hubert_pretraining"}


def _override(defaults, args):
    out = {}
    for key, default in defaults.items():
        if key == "_name" or not hasattr(args, key):
            out[key] = copy.deepcopy(default)
            continue
        value = getattr(args, key)
        if isinstance(value, str) and not value.startswith("${") and default is not None \
                and not isinstance(default, str):
            try:
                value = ast.literal_eval(value)  # old files stored complex values as strings
            except (ValueError, SyntaxError):
                pass
        if isinstance(value, tuple):
            value = list(value)
        if value is not None and isinstance(default, (bool, int, float)):
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                pass
        elif isinstance(default, list) and isinstance(value, list) and default \
                and all(type(x) is float for x in default):
            value = [float(x) for x in value]
        out[key] = value
    return out


def _cfg_from_args(args, family, path):
    """The task and model sections fairseq 0.12.2 derives from an old file's Namespace."""
    args = argparse.Namespace(**vars(args))
    if getattr(args, "task", None) == "speech_pretraining":  # fairseq's _upgrade_state_dict
        args.task = "audio_pretraining"
    if isinstance(getattr(args, "data", None), list) and args.data:
        args.data = args.data[0]
    if getattr(args, "task", None) != _TASKS[family]:
        raise SpeechFTError(
            f"{path}: a {family} model trained with task {getattr(args, 'task', None)!r}; "
            f"only {_TASKS[family]!r} checkpoints from before fairseq's hydra configs convert"
        )
    table = FAIRSEQ_0_12_2_DEFAULTS[family]
    return {"task": _override(table["task"], args), "model": _override(table["model"], args)}
