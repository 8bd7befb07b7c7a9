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
import copy

from speechft_upstream.checkpoints import files
from speechft_upstream.checkpoints.convert_legacy import cfg_from_args
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
    return files.load(path, allowed=ALLOWED_GLOBALS)


def detect(state, path):
    """'hubert', 'wav2vec2' or 'wavlm' for a convertible original file; else one-line SpeechFTError."""
    if not isinstance(state, dict):
        raise SpeechFTError(f"{path}: not a fairseq or WavLM checkpoint (top level is {type(state).__name__})")
    keys = set(state)
    if "model" not in keys or not isinstance(state["model"], dict):
        try:
            family = files.detect_family(state, path)
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
        cfg = cfg_from_args(state["args"], family, path)
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
    files.save_atomic(out, dst)
    return family, dst
