"""The paper's baselines through s3prl's unmodified runner: L2 toward θ0 and LoRA."""

import pytest
import torch

import s3prl.hub as hub
from speechft_upstream.checkpoints import files
from speechft_upstream.upstream import expert
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.finetune.baselines import LORA_PREFIX
from tests.conftest import assert_ok, error_lines, runner, train_args

STEPS = "config.runner.total_steps=6,,config.runner.eval_step=100,,config.optimizer.lr=1.0e-3"


def _train(tmp_path, tiny_hubert, name, yaml_text, extra=()):
    settings = tmp_path / f"{name}.yaml"
    settings.write_text(yaml_text)
    exp = tmp_path / name
    proc = runner(train_args("speechft_hubert", exp, tiny_hubert, ["-g", settings, "-o", STEPS, *extra]))
    assert_ok(proc)
    return exp, proc


def _upstream(path):
    return files.load(path, allowed=files.RUNNER_ALLOWED)["Upstream"]


def _distance(state, theta0):
    return sum(((state["model." + k].double() - v.double()) ** 2).sum() for k, v in theta0.items()).sqrt().item()


def test_l2_pulls_toward_theta0(tmp_path, tiny_hubert):
    theta0 = files.weights(*files.read_encoder(tiny_hubert))
    free, _ = _train(tmp_path, tiny_hubert, "free", "beta: 0\n")
    tied, proc = _train(tmp_path, tiny_hubert, "tied", "beta: 0\nl2: {lambda: 1000.0}\n")
    assert "L2 toward θ0, lambda 1000.0" in proc.stdout
    d_free = _distance(_upstream(free / "states-6.ckpt"), theta0)
    d_tied = _distance(_upstream(tied / "states-6.ckpt"), theta0)
    assert 0 < d_tied < 0.5 * d_free, (d_tied, d_free)


def test_l2_gradient_is_the_penalty(tiny_hubert, tmp_path):
    settings = tmp_path / "l2.yaml"
    settings.write_text("beta: 0\nl2: {lambda: 0.5}\n")
    model = expert.build("hubert", tiny_hubert, settings)
    param = model.model.encoder.layers[0].fc1.weight
    with torch.no_grad():
        param.add_(1.0)  # θ − θ0 = 1 everywhere
    (param * 0).sum().backward()  # the loss itself contributes nothing
    assert torch.allclose(param.grad, torch.full_like(param, 0.5))
    cnn = model.model.feature_extractor
    assert not any(p.requires_grad for p in cnn.parameters())


def test_lora_trains_adapters_and_saves_dense_theta_prime(tmp_path, tiny_hubert):
    theta0 = files.weights(*files.read_encoder(tiny_hubert))
    yaml_text = "beta: 0\nlora: {r: 2, alpha: 4, target_modules: [q_proj, v_proj]}\n"
    exp, proc = _train(tmp_path, tiny_hubert, "lora", yaml_text)
    assert "LoRA on 4 layers" in proc.stdout
    state = _upstream(exp / "states-6.ckpt")
    encoder = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    assert encoder.keys() == theta0.keys()  # stock keys: extract, merge and hubert_local read it
    changed = {k for k in theta0 if not torch.equal(theta0[k], encoder[k])}
    assert changed == {f"encoder.layers.{i}.self_attn.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    assert sum(k.startswith(LORA_PREFIX) for k in state) == 8

    # The dense weights are the adapted model: stock s3prl gives the same features.
    trained = expert.build("hubert", tiny_hubert, tmp_path / "lora.yaml")
    trained.load_state_dict(state)
    stock = hub.hubert_local(ckpt=str(tiny_hubert))
    stock.load_state_dict({k: v for k, v in state.items() if k.startswith("model.")})
    wav = [torch.randn(8000, generator=torch.Generator().manual_seed(0))]
    trained.eval(), stock.eval()
    with torch.no_grad():
        ours, theirs = trained(wav)["hidden_states"], stock(wav)["hidden_states"]
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) < 1e-4

    # Resume restores the adapters exactly and keeps training them.
    proc = runner(["-m", "train", "-e", exp / "states-6.ckpt", "-o", "config.runner.total_steps=9",
                   "--device", "cpu"])
    assert_ok(proc)
    resumed = _upstream(exp / "states-9.ckpt")
    key = "model.encoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(resumed[key], state[key])
    assert torch.equal(resumed["model.encoder.layers.0.fc1.weight"], theta0["encoder.layers.0.fc1.weight"])


@pytest.mark.parametrize("yaml_text, message", [
    ("l2: {lambda: -1}\n", "lambda >= 0"),
    ("lora: {rank: 4}\n", "unknown lora option"),
    ("l2: {lambda: 1}\nlora: {r: 2}\n", "not both"),
])
def test_bad_baseline_settings_are_one_line(tmp_path, tiny_hubert, yaml_text, message):
    settings = tmp_path / "bad.yaml"
    settings.write_text(yaml_text)
    with pytest.raises(SpeechFTError, match=message):
        expert.build("hubert", tiny_hubert, settings)


def test_bad_baseline_settings_on_the_runner(tmp_path, tiny_hubert):
    settings = tmp_path / "bad.yaml"
    settings.write_text("l2: {lambda: -1}\n")
    proc = runner(train_args("speechft_hubert", tmp_path / "exp", tiny_hubert, ["-g", settings]))
    lines = error_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1 and str(settings) in lines[0] and "lambda" in lines[0]
