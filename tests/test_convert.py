"""speechft convert: original fairseq / WavLM files -> s3prl's converted format, safely."""

import argparse
import os
import pickle
import zipfile

import pytest
import torch

from speechft_upstream import cli
from speechft_upstream.checkpoints import convert
from speechft_upstream.checkpoints import tiny

ARCHS = ("hubert", "wav2vec2", "wavlm")


class _DictionaryStandIn:
    pass


class _TrustedUnpickler(pickle.Unpickler):
    """Full unpickling for the reference (we wrote these files), fairseq's Dictionary stood in."""

    def find_class(self, module, name):
        if (module, name) == ("fairseq.data.dictionary", "Dictionary"):
            return _DictionaryStandIn
        return super().find_class(module, name)


class _trusted_pickle:
    Unpickler = _TrustedUnpickler
    load = pickle.load


def reference(path, arch):
    """What s3prl's converter builds (upstream/<arch>/convert.py), from a full, trusted load."""
    from omegaconf import OmegaConf

    state = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_trusted_pickle)
    if arch == "wavlm":
        return {"cfg": state["cfg"], "model": state["model"]}
    cfg = OmegaConf.to_container(OmegaConf.create(state["cfg"]))
    out = {"task_cfg": cfg["task"], "model_cfg": cfg["model"], "model_weight": state["model"]}
    if arch == "hubert":
        out["dictionaries_symbols"] = [d.symbols for d in state["task_state"]["dictionaries"]]
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict) and a[key] and all(isinstance(v, torch.Tensor) for v in a[key].values()):
            assert a[key].keys() == b[key].keys()
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), name
        else:
            assert a[key] == b[key], key


def hidden_states(upstream):
    upstream.eval()
    torch.manual_seed(1)
    wavs = [torch.randn(16000), torch.randn(12000)]
    with torch.no_grad():
        return upstream(wavs)["hidden_states"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    for arch in ARCHS:
        assert cli.main(["make-tiny", "--arch", arch, "--format", "fairseq", "--seed", "3",
                         "-o", str(folder / f"{arch}.pt")]) == 0
    return folder


@pytest.mark.parametrize("arch", ARCHS)
def test_convert_equals_s3prl_layout_and_loads_in_stock_upstreams(arch, originals, tmp_path, capsys):
    import s3prl.hub as hub

    src, out, ref_path = originals / f"{arch}.pt", tmp_path / "out.pt", tmp_path / "ref.pt"
    assert cli.main(["convert", str(src), "-o", str(out)]) == 0
    assert f"({arch})" in capsys.readouterr().out
    converted = torch.load(out, weights_only=True)
    ref = reference(src, arch)
    assert_same(converted, ref)
    torch.save(ref, ref_path)

    stock = getattr(hub, f"{arch}_local")
    expected = hidden_states(stock(ckpt=str(ref_path)))
    for upstream in (stock(ckpt=str(out)), getattr(hub, f"speechft_{arch}")(ckpt=str(out))):
        got = hidden_states(upstream)
        assert len(got) == len(expected) == 3
        for g, e in zip(got, expected):
            assert torch.equal(g, e)


def test_fairseq_layout_is_what_fairseq_saves(originals):
    state = torch.load(originals / "hubert.pt", weights_only=False, pickle_module=_trusted_pickle)
    assert {"args", "cfg", "model", "optimizer_history", "task_state", "extra_state"} <= set(state)
    from omegaconf import DictConfig

    assert isinstance(state["cfg"], DictConfig)
    assert {"common", "task", "model", "criterion", "optimization", "checkpoint"} <= set(state["cfg"])
    assert state["cfg"].model._name == "hubert" and state["cfg"].task._name == "hubert_pretraining"
    assert type(state["task_state"]["dictionaries"][0]).__name__ == "_DictionaryStandIn"


def test_output_is_written_atomically_and_not_overwritten(originals, tmp_path, capsys):
    out = tmp_path / "out.pt"
    out.write_bytes(b"keep")
    assert cli.main(["convert", str(originals / "wav2vec2.pt"), "-o", str(out)]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == b"keep"
    assert cli.main(["convert", str(originals / "wav2vec2.pt"), "-o", str(out), "--force"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out.pt"]  # no temporary left behind


def test_old_args_layout_converts(originals, tmp_path):
    """fairseq files from before hydra: {'args': Namespace, 'cfg' absent}."""
    import s3prl.hub as hub

    state = reference(originals / "wav2vec2.pt", "wav2vec2")
    task, model = dict(state["task_cfg"]), dict(state["model_cfg"])
    args = argparse.Namespace(**{k: v for k, v in {**task, **model}.items() if k != "_name"})
    args.arch, args.task = "wav2vec2", "audio_pretraining"
    args.conv_feature_layers = model["conv_feature_layers"]
    args.latent_temp = "(2, 0.5, 0.999995)"  # stored as a string by old fairseq
    old = tmp_path / "old.pt"
    torch.save({"args": args, "model": state["model_weight"], "optimizer_history": [],
                "extra_state": {}}, old)
    out = tmp_path / "out.pt"
    assert cli.main(["convert", str(old), "-o", str(out)]) == 0
    converted = torch.load(out, weights_only=True)
    assert converted["model_cfg"]["latent_temp"] == [2.0, 0.5, 0.999995]
    assert converted["model_cfg"]["encoder_layers"] == 2 and converted["task_cfg"]["_name"] == "audio_pretraining"
    torch.save(state, tmp_path / "ref.pt")
    for g, e in zip(hidden_states(hub.wav2vec2_local(ckpt=str(out))),
                    hidden_states(hub.wav2vec2_local(ckpt=str(tmp_path / "ref.pt")))):
        assert torch.equal(g, e)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("speechft: error: "), err
    return err[0]


def test_pickle_payload_is_refused_without_running(originals, tmp_path, capsys):
    state = torch.load(originals / "hubert.pt", weights_only=False, pickle_module=_trusted_pickle)
    state["task_state"]["dictionaries"][0] = None
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"args": None, "cfg": {"model": {"_name": "hubert"}, "task": {}},
                "model": state["model"], "extra_state": {"x": _Payload(marker)}}, evil)
    assert cli.main(["convert", str(evil), "-o", str(tmp_path / "out.pt")]) == 1
    line = _one_error_line(capsys)
    assert "evil.pt" in line and "refused to unpickle" in line and "posix.system" in line
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize("case", ["text", "foreign_dict", "converted", "other_arch", "truncated", "runner"])
def test_foreign_files_are_refused_with_one_line(case, originals, tmp_path, capsys, tiny_hubert):
    path = tmp_path / f"{case}.pt"
    if case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "foreign_dict":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, path)
    elif case == "converted":
        path = tiny_hubert
    elif case == "other_arch":
        torch.save({"args": None, "cfg": {"model": {"_name": "transformer_lm"}, "task": {"_name": "language_modeling"}},
                    "model": {"w": torch.zeros(2)}, "optimizer_history": []}, path)
    elif case == "truncated":
        data = (originals / "hubert.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        torch.save({"Upstream": {}, "Downstream": {}, "Args": None}, path)
    assert cli.main(["convert", str(path), "-o", str(tmp_path / "out.pt")]) == 1
    line = _one_error_line(capsys)
    assert str(path) in line
    expected = {"text": "not a PyTorch checkpoint", "foreign_dict": "not a fairseq or WavLM checkpoint",
                "converted": "already an s3prl converted hubert checkpoint",
                "other_arch": "'transformer_lm' checkpoint", "truncated": "truncated or corrupt",
                "runner": "not a fairseq or WavLM checkpoint"}[case]
    assert expected in line
    assert not (tmp_path / "out.pt").exists()


def test_allow_list_is_explicit():
    names = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in convert.ALLOWED_GLOBALS}
    assert "argparse.Namespace" in names and "fairseq.data.dictionary.Dictionary" in names
    assert not any(n.startswith(("builtins.eval", "builtins.exec", "os.", "posix.", "subprocess", "builtins.getattr",
                                 "builtins.type", "operator.")) for n in names)
    # stand-ins are inert: constructing and setting state runs nothing of omegaconf / fairseq / numpy
    cls = dict((g[1], g[0]) for g in convert.ALLOWED_GLOBALS if isinstance(g, tuple))["omegaconf.dictconfig.DictConfig"]
    obj = cls.__new__(cls)
    obj.__setstate__({"_content": {"a": 1}})
    assert convert.plain(obj) == {"a": 1}


def test_make_tiny_fairseq_does_not_leave_stand_in_modules(tmp_path):
    import sys

    tiny.write_tiny_format("hubert", tmp_path / "h.pt", fmt="fairseq")
    assert not any(m == "fairseq" or m.startswith("fairseq.") for m in sys.modules
                   if getattr(sys.modules[m], "__file__", None) is None and m.startswith("fairseq"))
    with zipfile.ZipFile(tmp_path / "h.pt") as z:
        assert any(n.endswith("data.pkl") for n in z.namelist())
