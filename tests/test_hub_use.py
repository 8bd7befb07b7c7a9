"""speechft upstreams outside s3prl's runner: stock behaviour until given a step budget; torch.hub."""

import torch

from speechft_upstream import cli
from tests.conftest import REPO, assert_ok, run_py


def wavs():
    generator = torch.Generator().manual_seed(3)
    return [torch.randn(16000, generator=generator), torch.randn(12000, generator=generator)]


def encoder_grads(model):
    """Gradients that reached the transformer layers after one forward and backward."""
    model.zero_grad(set_to_none=True)
    head = torch.ones((), requires_grad=True)  # stands in for a task head, which always learns
    hidden = model(wavs())["hidden_states"]
    (head * sum(h.pow(2).mean() for h in hidden)).backward()
    return [p.grad for n, p in model.named_parameters() if ".encoder.layers." in n]


def test_train_mode_forward_backward_like_stock(tiny_hubert):
    import s3prl.hub as hub

    ours, stock = hub.speechft_hubert(ckpt=str(tiny_hubert)), hub.hubert_local(ckpt=str(tiny_hubert))
    ours.train(), stock.train()
    assert torch.is_grad_enabled()
    grads = encoder_grads(ours)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    assert len(grads) == len(encoder_grads(stock))
    # the CNN stays frozen, as in the stock expert
    assert all(p.grad is None for n, p in ours.named_parameters() if "feature_extractor" in n)


def test_registered_name_trains_in_train_mode(tiny_hubert):
    assert cli.main(["register", "my_theta", str(tiny_hubert)]) == 0
    code = ("import torch, s3prl.hub as hub\n"
            "m = hub.my_theta().train()\n"
            "h = m([torch.randn(16000)])['hidden_states']\n"
            "sum(x.mean() for x in h).backward()\n"
            "print(sum(p.grad is not None for n, p in m.named_parameters() if '.encoder.layers.' in n))\n")
    proc = run_py(["-c", code])
    assert_ok(proc)
    assert int(proc.stdout.split()[-1]) > 0


def test_explicit_step_budget_freezes_encoder_for_beta(tmp_path, tiny_hubert):
    import s3prl.hub as hub

    cfg = tmp_path / "g.yaml"
    cfg.write_text("beta: 0.5\n")
    model = hub.speechft_hubert(ckpt=str(tiny_hubert), model_config=str(cfg)).train()
    assert model.set_step_budget(4) is model
    phases = [all(g is None for g in encoder_grads(model)) for _ in range(4)]
    assert phases == [True, True, False, False]  # steps 1-2 head only (⌊0.5·4⌋), then all
    # eval-mode and no_grad forwards are not steps
    model.eval()
    with torch.no_grad():
        model(wavs())
    assert model.speechft_schedule.forwards == 4


def test_total_steps_in_settings_is_the_budget(tmp_path, tiny_hubert):
    import s3prl.hub as hub

    cfg = tmp_path / "g.yaml"
    cfg.write_text("beta: 0.5\ntotal_steps: 2\n")
    model = hub.speechft_hubert(ckpt=str(tiny_hubert), model_config=str(cfg)).train()
    assert [all(g is None for g in encoder_grads(model)) for _ in range(2)] == [True, False]
    cfg.write_text("total_steps: -3\n")
    proc = run_py(["-c", f"import s3prl.hub as h; h.speechft_hubert(ckpt={str(tiny_hubert)!r}, model_config={str(cfg)!r})"])
    assert proc.returncode == 1
    assert "g.yaml: total_steps must be a positive integer, got -3" in proc.stderr


def test_torch_hub_load_local(tiny_hubert):
    assert cli.main(["register", "hub_theta", str(tiny_hubert)]) == 0
    code = ("import torch\n"
            f"repo = {str(REPO)!r}\n"
            f"m = torch.hub.load(repo, 'speechft_hubert', source='local', ckpt={str(tiny_hubert)!r})\n"
            "r = torch.hub.load(repo, 'hub_theta', source='local')\n"
            "import sys; sys.path.insert(0, repo); import hubconf; names = dir(hubconf)\n"
            "h = m.train()([torch.randn(16000)])['hidden_states']\n"
            "h[-1].sum().backward()\n"
            "print(type(m).__name__, type(r).__name__, 'speechft_wavlm' in names, 'hub_theta' in names)\n")
    proc = run_py(["-c", code], cwd="/")
    assert_ok(proc)
    assert proc.stdout.split()[-4:] == ["SpeechFTHubertExpert", "SpeechFTHubertExpert", "True", "True"]
