"""`speechft extract`: θ′ from a real runner checkpoint, loadable by stock s3prl."""

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream import cli
from speechft_upstream.checkpoints.extract import extract
from tests.conftest import assert_ok, run_py, runner, train_args

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the CPU is shared: no thread oversubscription
SHORT = "config.runner.total_steps=2,,config.runner.eval_step=2,,config.runner.save_step=2"


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, tiny_hubert):
    """A 2-step -f run with the encoder training from step 1 (beta 0)."""
    folder = tmp_path_factory.mktemp("extract")
    settings = folder / "speechft.yaml"
    settings.write_text("beta: 0\n")
    exp = folder / "exp"
    assert_ok(runner(train_args("speechft_hubert", exp, tiny_hubert, ["-g", settings, "-o", SHORT]), env=ONE_THREAD))
    assert (exp / "dev-best.ckpt").is_file()
    return exp


def runner_weights(path):
    states = files.load(path, allowed=files.RUNNER_ALLOWED)
    return {k[len("model."):]: v for k, v in states["Upstream"].items()}


def test_extract_loads_in_stock_s3prl(tmp_path, finetuned, tiny_hubert):
    out = tmp_path / "theta_prime.pt"
    proc = run_py(["-m", "speechft_upstream.cli", "extract", finetuned / "dev-best.ckpt",
                   "--base", tiny_hubert, "-o", out])
    assert_ok(proc)
    assert "wrote hubert encoder" in proc.stdout and "at step 2" in proc.stdout

    theta0 = torch.load(tiny_hubert, weights_only=True)
    theta_prime = torch.load(out, weights_only=True)
    assert theta_prime.keys() == theta0.keys()
    for key in ("task_cfg", "model_cfg", "dictionaries_symbols"):
        assert theta_prime[key] == theta0[key]
    tuned = runner_weights(finetuned / "dev-best.ckpt")
    for name, value in theta_prime["model_weight"].items():
        assert value.dtype == theta0["model_weight"][name].dtype
        assert torch.equal(value, tuned[name])
    name = "encoder.layers.0.fc1.weight"
    assert not torch.equal(theta_prime["model_weight"][name], theta0["model_weight"][name])

    import s3prl.hub as hub

    for entry in (hub.hubert_local, hub.speechft_hubert):
        model = entry(ckpt=str(out))
        state = model.state_dict()
        for name, value in tuned.items():
            assert torch.equal(state[f"model.{name}"], value), (entry.__name__, name)
        model.eval()
        with torch.no_grad():
            hidden = model([torch.randn(16000)])["hidden_states"]
        assert len(hidden) == 3 and all(torch.isfinite(h).all() for h in hidden)


def test_extract_from_states_checkpoint_in_process(tmp_path, finetuned, tiny_hubert, capsys):
    out = tmp_path / "theta_prime.pt"
    assert cli.main(["extract", str(finetuned / "states-2.ckpt"), "--base", str(tiny_hubert), "-o", str(out)]) == 0
    assert files.read_encoder(out)[1] == "hubert"
    # an existing output is kept unless --force
    assert cli.main(["extract", str(finetuned / "states-2.ckpt"), "--base", str(tiny_hubert), "-o", str(out)]) == 1
    assert "already exists (use --force" in capsys.readouterr().err
    assert cli.main(["extract", str(finetuned / "states-2.ckpt"), "--base", str(tiny_hubert), "-o", str(out),
                     "--force"]) == 0


def test_frozen_run_is_refused_in_one_line(tmp_path, tiny_hubert):
    exp = tmp_path / "frozen"
    args = [a for a in train_args("speechft_hubert", exp, tiny_hubert, ["-o", SHORT]) if a != "-f"]
    assert_ok(runner(args, env=ONE_THREAD))
    proc = run_py(["-m", "speechft_upstream.cli", "extract", exp / "dev-best.ckpt", "--base", tiny_hubert,
                   "-o", tmp_path / "out.pt"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds no 'Upstream' weights" in lines[0] and "without -f" in lines[0], proc.stderr
    assert not (tmp_path / "out.pt").exists()


def test_mismatched_base_and_bad_inputs(tmp_path, finetuned, tiny_dir):
    ckpt = finetuned / "states-2.ckpt"
    cases = {
        "wav2vec2": (ckpt, tiny_dir / "wav2vec2.pt", "does not match"),
        "encoder_as_runner": (tiny_dir / "hubert.pt", tiny_dir / "hubert.pt", "not an s3prl runner checkpoint"),
        "missing": (tmp_path / "nope.ckpt", tiny_dir / "hubert.pt", "no such file"),
    }
    # a HuBERT of another shape: same names, the differing shape named
    other = tmp_path / "other.pt"
    state = torch.load(tiny_dir / "hubert.pt", weights_only=True)
    state["model_weight"] = dict(state["model_weight"])
    state["model_weight"]["final_proj.weight"] = torch.zeros(3, 3)
    torch.save(state, other)
    cases["shape"] = (ckpt, other, "parameter 'final_proj.weight' has shape")
    for label, (source, base, message) in cases.items():
        with pytest.raises(Exception) as info:
            extract(source, base, tmp_path / f"{label}.pt")
        assert message in str(info.value), (label, str(info.value))
        assert not (tmp_path / f"{label}.pt").exists()
