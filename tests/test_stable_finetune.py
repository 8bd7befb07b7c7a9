"""Stable fine-tuning on s3prl's unmodified runner: β honoured, CNN untouched, resume-safe."""

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream.finetune.schedules import stable_finetuning_factor
from speechft_upstream.finetune.stable import StableSchedule
from tests.conftest import assert_ok, runner, train_args

T = 6
EVERY_STEP = (f"config.runner.total_steps={T},,config.runner.save_step=1,,config.runner.max_keep=20,,"
              f"config.runner.eval_step=100")


def encoder_state(path):
    """The 'Upstream' state of a runner checkpoint, keys as in the converted weights."""
    states = files.load(path, allowed=files.RUNNER_ALLOWED)
    return {k[len("model."):]: v for k, v in states["Upstream"].items()}


def split(weights):
    cnn = {k: v for k, v in weights.items() if k.startswith("feature_extractor.")}
    rest = {k: v for k, v in weights.items() if k not in cnn and k not in ("label_embs_concat",)
            and not k.startswith("final_proj.")}  # unused in forward: never receive gradients
    return cnn, rest


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def theta0_weights(tiny_dir):
    state, family = files.read_encoder(tiny_dir / "hubert.pt")
    return files.weights(state, family)


def settings(tmp_path, beta):
    path = tmp_path / "speechft.yaml"
    path.write_text(f"beta: {beta}\n")
    return path


def test_beta_honoured_on_the_runner(tmp_path, tiny_hubert, theta0_weights):
    exp = tmp_path / "exp"
    proc = runner(train_args("speechft_hubert", exp, tiny_hubert,
                             ["-g", settings(tmp_path, 0.5), "-o", EVERY_STEP]))
    assert_ok(proc)
    assert "head only for steps 1-3" in proc.stdout + proc.stderr
    cnn0, enc0 = split(theta0_weights)
    heads = []
    for step in range(1, T + 1):
        cnn, enc = split(encoder_state(exp / f"states-{step}.ckpt"))
        assert same(cnn, cnn0), f"CNN changed by step {step}"
        assert same(enc, enc0) == (step <= 3), f"encoder at step {step}"
        heads.append(files.load(exp / f"states-{step}.ckpt", allowed=files.RUNNER_ALLOWED)["Downstream"])
    first = heads[0]
    assert any(not torch.equal(first[k], heads[1][k]) for k in first), "the head must train in phase 1"


def test_resume_keeps_the_step_count(tmp_path, tiny_hubert, theta0_weights):
    exp = tmp_path / "exp"
    g = settings(tmp_path, 0.5)
    first = f"config.runner.total_steps={T},,config.runner.save_step=1,,config.runner.max_keep=20,,config.runner.eval_step=100"
    assert_ok(runner(train_args("speechft_hubert", exp, tiny_hubert, ["-g", g, "-o", first])))
    # Resume in place from step 2 (the runner writes to the expdir stored in the checkpoint).
    for step in range(3, T + 1):
        (exp / f"states-{step}.ckpt").unlink()
    proc = runner(["-m", "train", "-e", exp / "states-2.ckpt", "--device", "cpu"])
    assert_ok(proc)
    assert "resuming after step 2" in proc.stdout + proc.stderr
    _, enc0 = split(theta0_weights)
    assert same(split(encoder_state(exp / "states-3.ckpt"))[1], enc0)
    assert not same(split(encoder_state(exp / "states-4.ckpt"))[1], enc0)


def test_beta_zero_trains_encoder_from_step_one(tmp_path, tiny_hubert, theta0_weights):
    exp = tmp_path / "exp"
    assert_ok(runner(train_args("speechft_hubert", exp, tiny_hubert,
                                ["-g", settings(tmp_path, 0), "-o", EVERY_STEP.replace(f"total_steps={T}", "total_steps=1")])))
    cnn, enc = split(encoder_state(exp / "states-1.ckpt"))
    cnn0, enc0 = split(theta0_weights)
    assert same(cnn, cnn0) and not same(enc, enc0)


def test_bad_beta_is_one_line(tmp_path, tiny_hubert):
    proc = runner(train_args("speechft_hubert", tmp_path / "exp", tiny_hubert, ["-g", settings(tmp_path, 1.5)]))
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert len(errors) == 1 and "speechft.yaml: beta must be a number in [0, 1)" in errors[0]


def test_schedule_counts_optimizer_steps_with_accumulation():
    schedule = StableSchedule(beta=0.25)
    schedule.configure(total_steps=8, accumulate=2, start_step=0)
    phases = [schedule.next_forward_is_head_only() for _ in range(16)]
    assert phases == [True] * 4 + [False] * 12  # steps 1-2 head only, two forwards each


def test_stable_finetuning_lr_schedule():
    factors = [stable_finetuning_factor(s, 100) for s in range(101)]
    assert factors[0] == 0 and factors[5] == 0.5 and factors[10] == 1.0
    assert all(f == 1.0 for f in factors[10:50])
    assert factors[75] == 0.5 and factors[100] == 0.0


def test_schedule_by_name_in_runner(tmp_path, tiny_hubert):
    exp = tmp_path / "exp"
    proc = runner(train_args("speechft_hubert", exp, tiny_hubert, [
        "-o", "config.scheduler={'name': 'stable_finetuning_schedule'}"]))
    assert_ok(proc)
    states = files.load(exp / "states-6.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["Scheduler"]["_last_lr"] == [0.0]  # decayed to 0 at the last step
