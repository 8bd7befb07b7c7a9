"""`speechft merge` end to end: real files, the real CLI, stock s3prl loading.

Most runs call the CLI's ``main`` in this process (a subprocess costs seconds of torch import
each); the ones that check what a user sees from the installed command run it as a subprocess.
"""

import argparse
import contextlib
import hashlib
import io
import os
from types import SimpleNamespace

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream import cli
from tests.conftest import assert_ok, run_py

HEADS = ("final_proj.", "label_embs_concat")  # HuBERT tensors θ̂ takes from θ0


def speechft_process(*args):
    """The CLI as users run it: its own process, exit status, stdout and stderr."""
    return run_py(["-m", "speechft_upstream.cli", *args])


def speechft(*args):
    """The same CLI entry point, in this process; same exit status and output streams."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def finetune(base_path, path, seed, family="hubert", scale=1e-2):
    """A θ′ like stable fine-tuning leaves: CNN untouched, everything else (heads too) moved."""
    state = torch.load(base_path, weights_only=True)
    weights = files.weights(state, family)
    g = torch.Generator().manual_seed(seed)
    for name, value in weights.items():
        if value.is_floating_point() and not name.startswith("feature_extractor."):
            weights[name] = value + scale * torch.randn(value.shape, generator=g)
    torch.save(state, path)
    return path


def load_weights(path, family="hubert"):
    return files.weights(torch.load(path, weights_only=True), family)


def expected(base, fts, alpha, keep=HEADS):
    """θ0 + α·mean_i(θ′_i − θ0), written out in torch by hand."""
    b, ts = load_weights(base), [load_weights(f) for f in fts]
    out = {}
    for name, t0 in b.items():
        if name.startswith(keep):
            out[name] = t0
        else:
            tau = sum(t[name] - t0 for t in ts) / len(ts)
            out[name] = t0 + alpha * tau
    return out


def assert_same(got, want):
    assert list(got) == list(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert torch.equal(got[name], want[name]), name


@pytest.fixture(scope="module")
def thetas(tmp_path_factory, tiny_hubert):
    folder = tmp_path_factory.mktemp("thetas")
    return [finetune(tiny_hubert, folder / f"ft{i}.pt", seed=i) for i in (1, 2, 3)]


def test_help():
    for command in ("merge", "info"):
        proc = speechft_process(command, "--help")
        assert_ok(proc)
        assert f"usage: speechft {command}" in proc.stdout


def test_one_finetuned_exact_and_format(tmp_path, tiny_hubert, thetas):
    out = tmp_path / "merged.pt"
    proc = speechft_process("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--alpha", "0.25", "-o", out)
    assert_ok(proc)
    assert proc.stdout.strip() == f"wrote {out} (linear, α = 0.25, from 1 fine-tuned)"
    assert_same(load_weights(out), expected(tiny_hubert, thetas[:1], 0.25))
    merged, base = torch.load(out, weights_only=True), torch.load(tiny_hubert, weights_only=True)
    for key in ("task_cfg", "model_cfg", "dictionaries_symbols"):
        assert merged[key] == base[key]
    # heads really were moved in θ′ and really were kept from θ0
    ft = load_weights(thetas[0])
    assert not torch.equal(ft["final_proj.weight"], base["model_weight"]["final_proj.weight"])
    assert torch.equal(merged["model_weight"]["final_proj.weight"], base["model_weight"]["final_proj.weight"])
    assert torch.equal(merged["model_weight"]["label_embs_concat"], base["model_weight"]["label_embs_concat"])
    assert os.listdir(tmp_path) == ["merged.pt"]
    # a valid zip: every record's CRC-32 (filled in with zlib after writing) checks out
    import zipfile

    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None


def test_several_finetuned_and_alpha_sweep_load_in_s3prl(tmp_path, tiny_hubert, thetas):
    out = tmp_path / "m.pt"
    proc = speechft("merge", "--base", tiny_hubert, "--finetuned", *thetas, "--alpha", "0.1,0.25,0.5", "-o", out)
    assert_ok(proc)
    paths = {a: tmp_path / f"m_alpha{a}.pt" for a in ("0.1", "0.25", "0.5")}
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in paths.values())
    for a, path in paths.items():
        assert_same(load_weights(path), expected(tiny_hubert, thetas, float(a)))

    import s3prl.hub as hub

    wav = [torch.randn(16000, generator=torch.Generator().manual_seed(0))]
    stock = hub.hubert_local(ckpt=str(paths["0.25"])).eval()
    ours = hub.speechft_hubert(ckpt=str(paths["0.25"])).eval()
    want = expected(tiny_hubert, thetas, 0.25)
    for name, value in stock.model.state_dict().items():
        assert torch.equal(value, want[name]), name
    with torch.no_grad():
        a, b = stock(wav)["hidden_states"], ours(wav)["hidden_states"]
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_runner_checkpoint_as_finetuned(tmp_path, tiny_hubert, thetas):
    dev_best = runner_checkpoint(thetas[0], tmp_path / "dev-best.ckpt")
    out = tmp_path / "from_runner.pt"
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", dev_best, "--alpha", "0.25", "-o", out))
    assert_same(load_weights(out), expected(tiny_hubert, thetas[:1], 0.25))
    proc = speechft("info", out)
    assert_ok(proc)
    assert "(runner)" in proc.stdout


@pytest.mark.parametrize("family", ["wav2vec2", "wavlm"])
def test_other_families(family, tmp_path, tiny_dir):
    base = tiny_dir / f"{family}.pt"
    ft = finetune(base, tmp_path / "ft.pt", seed=5, family=family)
    out = tmp_path / "merged.pt"
    assert_ok(speechft("merge", "--base", base, "--finetuned", ft, "--alpha", "0.5", "-o", out))
    b, t, m = load_weights(base, family), load_weights(ft, family), load_weights(out, family)
    kept = ("final_proj.", "project_q.", "quantizer.", "label_embs_concat")
    assert list(m) == list(b)
    for name, t0 in b.items():
        want = t0 if name.startswith(kept) else t0 + 0.5 * (t[name] - t0)
        assert torch.equal(m[name], want), name

    import s3prl.hub as hub

    stock = getattr(hub, f"{family}_local")(ckpt=str(out)).eval()
    ours = getattr(hub, f"speechft_{family}")(ckpt=str(out)).eval()
    wav = [torch.randn(16000, generator=torch.Generator().manual_seed(1))]
    with torch.no_grad():
        a, c = stock(wav)["hidden_states"], ours(wav)["hidden_states"]
    assert all(torch.equal(x, y) for x, y in zip(a, c))


def runner_checkpoint(converted, path):
    """An s3prl runner checkpoint (dev-best.ckpt) whose fine-tuned upstream is ``converted``."""
    weights = load_weights(converted)
    torch.save({"Upstream": {"model." + k: v for k, v in weights.items()},
                "Downstream": {"linear.weight": torch.zeros(2, 48)}, "Featurizer": {"weights": torch.zeros(3)},
                "Optimizer": {}, "Step": 100, "Epoch": 1,
                "Args": argparse.Namespace(upstream="speechft_hubert", downstream="example", upstream_trainable=True),
                "Config": {"runner": {"total_steps": 100}}}, path)
    return path


def test_authors_config_keys(tmp_path, tiny_hubert, thetas):
    """A config written as the authors' merge_config/*.yaml are (flow style, runner θ′)."""
    dev_best = runner_checkpoint(thetas[1], tmp_path / "dev-best.ckpt")
    cfg = tmp_path / "hubert_alpha_0.25.yaml"
    cfg.write_text(f"""{{
  'merge_method': 'linear',
  'alpha': 0.25,
  'base_model_name': 'hubert',
  'base_model_ckpt_path': '{tiny_hubert}',
  'finetune_model_names': ['asr_a', 'asr_b'],
  'finetune_model_paths': [
    '{thetas[0]}',
    '{dev_best}'
  ],
  'output_dir': '{tmp_path / "out"}/'
}}""")
    assert_ok(speechft("merge", "--config", cfg))
    # the authors' file names: merged_model.pt, and their config beside it (test_merge_authors.py)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.yaml", "merged_model.pt"]
    assert_same(load_weights(tmp_path / "out" / "merged_model.pt"), expected(tiny_hubert, thetas[:2], 0.25))
    # options on the command line override the file
    assert_ok(speechft("merge", "--config", cfg, "--alpha", "0.5", "-o", tmp_path / "half.pt"))
    assert_same(load_weights(tmp_path / "half.pt"), expected(tiny_hubert, thetas[:2], 0.5))
    # a typo is named, not ignored
    cfg.write_text(cfg.read_text().replace("'merge_method'", "'merge_methd'"))
    proc = speechft("merge", "--config", cfg)
    assert proc.returncode == 1
    assert proc.stderr == f"speechft: error: {cfg}: unknown key 'merge_methd' (did you mean 'merge_method'?)\n"


def test_register_output_as_upstream(tmp_path, tiny_hubert, thetas):
    import s3prl.hub as hub

    from speechft_upstream.upstream import registry

    out = tmp_path / "reg.pt"
    proc = speechft("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--alpha", "0.25",
                    "-o", out, "--register", "merged_asr")
    assert_ok(proc)
    assert "registered upstream 'merged_asr'" in proc.stdout
    registry.register_all(hub)  # what the startup hook does when a new process imports s3prl.hub
    model = hub.merged_asr()
    assert type(model).__name__ == "SpeechFTHubertExpert"
    want = expected(tiny_hubert, thetas[:1], 0.25)
    assert torch.equal(model.model.encoder.layers[0].fc1.weight, want["encoder.layers.0.fc1.weight"])

    # a name registration would refuse is refused before merging: no output appears
    for name, text in (("hubert_local", "already an s3prl or speechft upstream name"),
                       ("merged_asr", "already registered for")):
        proc = speechft("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--alpha", "0.25",
                        "-o", tmp_path / "again.pt", "--register", name)
        assert proc.returncode == 1 and text in proc.stderr and proc.stderr.count("\n") == 1
        assert not (tmp_path / "again.pt").exists()
    # one name per α when sweeping
    proc = speechft("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--alpha", "0.1,0.5",
                    "-o", tmp_path / "sweep.pt", "--register", "sweep")
    assert_ok(proc)
    assert set(registry.read()) == {"merged_asr", "sweep_alpha0p1", "sweep_alpha0p5"}


def test_methods_through_cli(tmp_path, tiny_hubert, thetas):
    """Each method and per-layer α runs end to end; the arithmetic itself is in test_merge_methods."""
    from speechft_upstream.merge import methods

    b = load_weights(tiny_hubert)
    fts = [load_weights(t) for t in thetas[:2]]
    name = "encoder.layers.1.fc1.weight"
    cases = {
        "ta": (["--method", "task_arithmetic", "--weights", "0.7,0.3", "--alpha", "0.5"],
               lambda: methods.merge("task_arithmetic", b[name], [f[name] for f in fts], [0.5], weights=[0.7, 0.3])[0]),
        "ties": (["--method", "ties", "--density", "0.3", "--alpha", "1"],
                 lambda: methods.merge("ties", b[name], [f[name] for f in fts], [1.0], density=0.3)[0]),
        "dare": (["--method", "dare", "--density", "0.5", "--seed", "3", "--alpha", "1"],
                 lambda: methods.merge("dare", b[name], [f[name] for f in fts], [1.0], name=name,
                                       density=0.5, seed=3)[0]),
        "layers": (["--layer-alpha", "0.2,0.6", "--alpha", "0.4"],
                   lambda: b[name] + 0.6 * ((fts[0][name] - b[name]) + (fts[1][name] - b[name])) / 2),
        "schedule": (["--layer-alpha", "0:1", "--alpha", "0.4"],
                     lambda: b[name] + 1.0 * ((fts[0][name] - b[name]) + (fts[1][name] - b[name])) / 2),
    }
    for label, (args, want) in cases.items():
        out = tmp_path / f"{label}.pt"
        assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", *thetas[:2], *args, "-o", out))
        got = load_weights(out)
        assert torch.equal(got[name], want()), label
        assert torch.equal(got["final_proj.weight"], b["final_proj.weight"]), label
    # the CNN is outside the layers: per-layer runs give it --alpha
    cnn = "encoder.pos_conv.0.bias"
    got = load_weights(tmp_path / "layers.pt")[cnn]
    assert torch.equal(got, b[cnn] + 0.4 * ((fts[0][cnn] - b[cnn]) + (fts[1][cnn] - b[cnn])) / 2)


# --- refusals ------------------------------------------------------------------------------------

class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _broken_inputs(tmp, tiny_hubert, tiny_dir, thetas):
    """name -> (extra merge args, file the error must name, text the error must hold)."""
    state = torch.load(thetas[0], weights_only=True)
    state["task_cfg"] = Payload(tmp / "pwned")
    torch.save(state, tmp / "payload.pt")

    state = torch.load(thetas[0], weights_only=True)
    state["model_weight"]["encoder.layers.1.fc1.weight"] = torch.zeros(80, 48)
    torch.save(state, tmp / "arch.pt")

    state = torch.load(thetas[0], weights_only=True)
    state["model_weight"]["encoder.layers.1.fc2.bias"][3] = float("nan")
    torch.save(state, tmp / "nan.pt")

    state = torch.load(tiny_hubert, weights_only=True)
    state["model_weight"]["encoder.layers.0.fc1.bias"] += 1e38
    torch.save(state, tmp / "huge.pt")

    data = (thetas[0]).read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])

    torch.save({"Downstream": {}, "Step": 100, "Args": argparse.Namespace(upstream="speechft_hubert")},
               tmp / "frozen.ckpt")  # a runner checkpoint of a run without -f

    ft = ["--finetuned", str(thetas[0])]
    return {
        "payload": (["--finetuned", str(tmp / "payload.pt"), "--alpha", "0.25"], tmp / "payload.pt", "refused to unpickle"),
        "architecture": (["--finetuned", str(tmp / "arch.pt"), "--alpha", "0.25"], tmp / "arch.pt",
                         "'encoder.layers.1.fc1.weight' has shape (80, 48) but in θ0"),
        "family": (["--finetuned", str(tiny_dir / "wav2vec2.pt"), "--alpha", "0.25"], tiny_dir / "wav2vec2.pt",
                   "is a wav2vec2 checkpoint but θ0"),
        "nan": (["--finetuned", str(tmp / "nan.pt"), "--alpha", "0.25"], tmp / "nan.pt",
                "weight 'encoder.layers.1.fc2.bias' holds NaN or Inf"),
        "inf_result": (["--finetuned", str(tmp / "huge.pt"), "--alpha", "5", "--extrapolate"], tmp / "out" / "m.pt",
                       "merged weight 'encoder.layers.0.fc1.bias' (α = 5) holds NaN or Inf"),
        "alpha_range": ([*ft, "--alpha", "1.5"], "merge", "α = 1.5 is outside [0, 1]; pass --extrapolate"),
        "alpha_negative": ([*ft, "--alpha=-0.1"], "merge", "α = -0.1 is outside [0, 1]"),
        "truncated": (["--finetuned", str(tmp / "truncated.pt"), "--alpha", "0.25"], tmp / "truncated.pt",
                      "truncated or corrupt"),
        "missing": (["--finetuned", str(tmp / "nope.pt"), "--alpha", "0.25"], tmp / "nope.pt", "no such file"),
        "frozen_run": (["--finetuned", str(tmp / "frozen.ckpt"), "--alpha", "0.25"], tmp / "frozen.ckpt",
                       "trained without -f"),
        "exists": ([*ft, "--alpha", "0.25"], tmp / "out" / "m.pt", "already exists (use --force"),
    }


def test_refusals(tmp_path, tiny_hubert, tiny_dir, thetas):
    cases = _broken_inputs(tmp_path, tiny_hubert, tiny_dir, thetas)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for label, (args, culprit, text) in cases.items():
        if label == "exists":
            (out_dir / "m.pt").write_text("keep me")
        # two of them as users see them, from the command's own process
        run = speechft_process if label in ("payload", "inf_result") else speechft
        proc = run("merge", "--base", tiny_hubert, *args, "-o", out_dir / "m.pt")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1, (label, proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (label, proc.stderr)
        assert lines[0].startswith(f"speechft: error: {culprit}: "), (label, lines[0])
        assert text in lines[0], (label, lines[0])
        left = sorted(os.listdir(out_dir))
        assert left == (["m.pt"] if label == "exists" else []), (label, left)
    assert (out_dir / "m.pt").read_text() == "keep me"
    assert not (tmp_path / "pwned").exists()

    # the payload is real: an unsafe load would have run it
    torch.load(tmp_path / "payload.pt", weights_only=False)
    assert (tmp_path / "pwned").exists()

    # --force replaces; --extrapolate allows α > 1
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", thetas[0], "--alpha", "1.5",
                       "--extrapolate", "--force", "-o", out_dir / "m.pt"))
    assert_same(load_weights(out_dir / "m.pt"), expected(tiny_hubert, thetas[:1], 1.5))
    assert os.listdir(out_dir) == ["m.pt"]


def test_provenance_in_info(tmp_path, tiny_hubert, thetas):
    from speechft_upstream import __version__

    out = tmp_path / "prov.pt"
    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", *thetas[:2], "--alpha", "0.25", "-o", out))
    proc = speechft_process("info", out)
    assert_ok(proc)
    text = proc.stdout
    assert f"speechft {__version__}" in text and "method: linear" in text and "α: 0.25" in text
    for path in (tiny_hubert, *thetas[:2]):
        assert hashlib.sha256(path.read_bytes()).hexdigest() in text
    record = torch.load(out, weights_only=True)["speechft_provenance"]
    assert record["base"]["sha256"] == hashlib.sha256(tiny_hubert.read_bytes()).hexdigest()


def test_interrupted_merge_leaves_nothing(tmp_path, tiny_hubert, thetas, monkeypatch):
    """Ctrl-C half-way (after some tensors were written): neither output nor temporary file stays."""
    from speechft_upstream.checkpoints import stream

    real_add, calls = stream.StreamWriter.add, []

    def add_then_interrupt(self, tensor):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_add(self, tensor)

    monkeypatch.setattr(stream.StreamWriter, "add", add_then_interrupt)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        cli.main(["merge", "--base", str(tiny_hubert), "--finetuned", str(thetas[0]),
                  "--alpha", "0.1,0.5", "-o", str(out / "m.pt")])
    assert len(calls) == 10
    assert list(out.iterdir()) == []


def test_half_precision_checkpoint_and_copied_tensors(tmp_path, tiny_hubert, thetas):
    """fp16 inputs: arithmetic in float32, output in fp16; unchanged tensors are θ0's own bits."""
    def to_half(src, dst):
        state = torch.load(src, weights_only=True)
        state["model_weight"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model_weight"].items()}
        torch.save(state, dst)
        return dst

    base, ft = to_half(tiny_hubert, tmp_path / "b16.pt"), to_half(thetas[0], tmp_path / "f16.pt")
    out = tmp_path / "m16.pt"
    assert_ok(speechft("merge", "--base", base, "--finetuned", ft, "--alpha", "0.3", "-o", out))
    b, t, m = load_weights(base), load_weights(ft), load_weights(out)
    for name, t0 in b.items():
        want = t0 if name.startswith(HEADS) else (t0.float() + 0.3 * (t[name].float() - t0.float())).half()
        assert m[name].dtype == torch.float16 and torch.equal(m[name], want), name
    record = torch.load(out, weights_only=True)["speechft_provenance"]
    cnn = [n for n in b if n.startswith("feature_extractor.")]
    assert record["copied_unchanged"] == len(cnn)  # stable fine-tuning leaves the CNN as it was
    assert record["merged"] + record["copied_unchanged"] + len(record["kept_from_base"]) == len(b)
