"""The unmodified s3prl runner trains, resumes and evaluates with -u speechft_hubert."""

from pathlib import Path

import torch

import s3prl
from tests.conftest import assert_ok, error_lines, run_py, runner, train_args


def _upstream_weights(ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    return state["Upstream"]


def test_train_resume_evaluate(tmp_path, tiny_hubert):
    exp = tmp_path / "exp"
    assert_ok(runner(train_args("speechft_hubert", exp, tiny_hubert)))
    assert (exp / "states-3.ckpt").is_file() and (exp / "states-6.ckpt").is_file()
    assert (exp / "dev-best.ckpt").is_file()

    # -f really made the encoder trainable: its saved weights moved away from θ0.
    theta0 = torch.load(tiny_hubert, weights_only=True)["model_weight"]
    trained = _upstream_weights(exp / "states-6.ckpt")
    name = "encoder.layers.0.fc1.weight"
    assert not torch.equal(trained[f"model.{name}"], theta0[name])

    # Resume (-e) needs argparse.Namespace on torch's weights_only allow-list.
    proc = runner(["-m", "train", "-e", exp / "states-6.ckpt", "-o", "config.runner.total_steps=9",
                   "--device", "cpu"])
    assert_ok(proc)
    assert "Resume from" in proc.stdout
    assert (exp / "states-9.ckpt").is_file()
    resumed = _upstream_weights(exp / "states-9.ckpt")
    assert not torch.equal(resumed[f"model.{name}"], trained[f"model.{name}"])

    proc = runner(["-m", "evaluate", "-e", exp / "dev-best.ckpt", "--device", "cpu"])
    assert_ok(proc)
    assert "test: 100%" in proc.stderr


def test_run_downstream_script_from_package_folder(tmp_path, tiny_hubert):
    """`python run_downstream.py` inside s3prl's folder, as s3prl's docs show."""
    folder = Path(s3prl.__file__).parent
    assert_ok(run_py(["run_downstream.py", "-h"], cwd=folder))
    exp = tmp_path / "exp"
    proc = run_py(["run_downstream.py", *train_args("speechft_hubert", exp, tiny_hubert,
                                                    extra=["-o", "config.runner.total_steps=3"])],
                  cwd=folder)
    assert_ok(proc)
    assert (exp / "states-3.ckpt").is_file()


def test_help_works(tmp_path):
    proc = runner(["-h"])
    assert_ok(proc)
    assert "--upstream" in proc.stdout


def test_bad_checkpoints_give_one_line(tmp_path, tiny_dir):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((tiny_dir / "hubert.pt").read_bytes()[:50_000])
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder": torch.zeros(3)}, foreign)
    cases = {
        tmp_path / "missing.pt": "no such file",
        truncated: "truncated or corrupt",
        tiny_dir / "wav2vec2.pt": "is a wav2vec2 checkpoint, but a hubert checkpoint is needed",
        foreign: "not an s3prl converted checkpoint",
    }
    for path, message in cases.items():
        proc = runner(train_args("speechft_hubert", tmp_path / f"exp_{path.stem}", path))
        assert proc.returncode == 1, proc.stderr[-2000:]
        lines = error_lines(proc)
        assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
