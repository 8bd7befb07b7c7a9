"""benchmark/stage_baselines.py and the recipes' --baseline options, on the real runner.

One module-wide set of smoke-size runs (4 steps, batch 2, β 0.25: the encoder learns on steps
2-4) on a tiny PR folder and the tiny HuBERT: plain stable fine-tuning (stage_finetune), then each
baseline with the same budget and seed.
"""

import math
import time

import pytest
import torch

from speechft_upstream.benchmark import stage_baselines
from speechft_upstream.benchmark.stage_baselines import BASELINES, ENCODER_NAMES, LABELS, stage_baseline
from speechft_upstream.benchmark.stages import stage_finetune
from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from tests.test_recipes import SMOKE, make_pr, ok, recipe

LAMBDA = 1000.0  # large, so the pull toward θ0 shows within 3 encoder steps
ADAPTED = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2")


def _encoder(path):
    return files.weights(*files.read_encoder(path))


def _runner_encoder(path):
    state = files.load(path, allowed=files.RUNNER_ALLOWED)["Upstream"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}


def _distance(a, b):
    return math.sqrt(sum(((a[k].double() - b[k].double()) ** 2).sum().item() for k in b))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_dir):
    root = tmp_path_factory.mktemp("baselines")
    make_pr(root / "corpus" / "pr")
    corpus = {"dir": str(root / "corpus")}
    theta0 = {"path": str(tiny_dir / "hubert.pt"), "source": "tiny hubert"}
    work = root / "work"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(stage_baselines.SETTINGS, "l2", {"lambda": LAMBDA})
        started = time.time()
        out = {"plain": stage_finetune(work, "smoke", corpus, theta0, "cpu")}
        for kind in BASELINES:
            out[kind] = stage_baseline(work, "smoke", corpus, theta0, "cpu", kind)
        seconds = time.time() - started
        again = {kind: stage_baseline(work, "smoke", corpus, theta0, "cpu", kind) for kind in BASELINES}
        reuse_seconds = time.time() - started - seconds
    return {"work": work, "corpus": corpus, "theta0": theta0, "out": out, "again": again, "root": root,
            "seconds": seconds, "reuse_seconds": reuse_seconds}


def test_names_and_labels():
    assert BASELINES == ("l2", "lora", "early")
    assert set(ENCODER_NAMES) == set(LABELS) == set(BASELINES)
    assert ENCODER_NAMES["early"] == "theta_prime_early" and LABELS["l2"] == "L2 toward θ0"


def test_each_baseline_is_a_theta_prime_that_moved(runs):
    import s3prl.hub as hub

    theta0 = _encoder(runs["theta0"]["path"])
    for kind in BASELINES:
        out = runs["out"][kind]
        assert out["kind"] == kind and out["task"] == "PR" and out["settings"]["baseline"] == kind
        assert out["settings"]["steps"] == 4 and out["settings"]["beta"] == 0.25
        assert str(runs["work"] / f"baseline_{kind}_pr") in out["path"] and out["path"].startswith("/")
        assert len(out["dev_per"]) == 1  # the one dev pass of a 4-step run
        tuned = _encoder(out["path"])
        assert tuned.keys() == theta0.keys()
        assert _distance(tuned, theta0) > 0, kind
        assert all(torch.equal(tuned[k], v) for k, v in theta0.items() if k.startswith("feature_extractor."))
        model = hub.hubert_local(ckpt=out["path"])  # stock s3prl loads it as it loads θ′
        assert torch.equal(model.state_dict()["model.encoder.layers.0.fc1.weight"],
                           tuned["encoder.layers.0.fc1.weight"])


def test_l2_with_a_large_lambda_stays_closer_to_theta0(runs):
    exp = runs["work"] / "baseline_l2_pr" / "exp"
    assert "l2: {lambda: 1000.0}" in (exp / "speechft.yaml").read_text()
    assert "L2 toward θ0, lambda 1000.0" in (exp / "train.log").read_text()
    assert runs["out"]["l2"]["settings"]["l2_lambda"] == LAMBDA
    theta0 = _encoder(runs["theta0"]["path"])
    d_plain = _distance(_encoder(runs["out"]["plain"]["path"]), theta0)
    d_l2 = _distance(_encoder(runs["out"]["l2"]["path"]), theta0)
    assert 0 < d_l2 < 0.5 * d_plain, (d_l2, d_plain)


def test_lora_changes_exactly_the_adapted_weights(runs):
    exp = runs["work"] / "baseline_lora_pr" / "exp"
    assert "lora: {r: 8}" in (exp / "speechft.yaml").read_text()
    assert "LoRA on 12 layers" in (exp / "train.log").read_text()  # 6 modules x 2 layers of tiny HuBERT
    assert runs["out"]["lora"]["settings"]["lora"]["r"] == 8
    theta0 = _encoder(runs["theta0"]["path"])
    tuned = _encoder(runs["out"]["lora"]["path"])
    changed = {k for k in theta0 if not torch.equal(theta0[k], tuned[k])}
    # biases, layer norms, positional conv and projections stay θ0: only merged B·A moved
    assert changed == {f"encoder.layers.{i}.{m}.weight" for i in range(2) for m in ADAPTED}


def test_early_checkpoint_is_step_n_of_the_same_run(runs):
    out = runs["out"]["early"]
    settings = out["settings"]
    assert settings["early_step"] == 2 and settings["head_only_steps"] == 1  # max(round(0.25*4), 1+1)
    exp = runs["work"] / "baseline_early_pr" / "exp"
    assert sorted(p.name for p in exp.glob("states-*.ckpt")) == ["states-2.ckpt"]
    early = _encoder(out["path"])
    step2 = _runner_encoder(exp / "states-2.ckpt")
    assert all(torch.equal(early[k], step2[k]) for k in early)
    # saving at step 2 left the run as it was: its end is stage_finetune's θ′, tensor for tensor
    final, plain = _encoder(out["final_path"]), _encoder(runs["out"]["plain"]["path"])
    assert all(torch.equal(final[k], plain[k]) for k in plain)
    theta0 = _encoder(runs["theta0"]["path"])
    assert 0 < _distance(early, theta0) < _distance(final, theta0)


def test_a_shorter_run_is_not_the_start_of_the_long_one(runs, tmp_path):
    """Why the early checkpoint comes from the long run: LR schedule and β scale with the steps."""
    exp = tmp_path / "short"
    theta0 = runs["theta0"]["path"]
    args = ["finetune", "--ckpt", theta0, "--data", runs["corpus"]["dir"] + "/pr", "--exp", exp, "--beta", "0.25",
            "--lr", "0.001", *SMOKE, "-o", "config.runner.gradient_accumulate_steps=1"]  # SMOKE: 2 steps, batch 2
    ok(recipe("pr", *args))
    short = _runner_encoder(exp / "states-2.ckpt")
    early = _encoder(runs["out"]["early"]["path"])
    assert any(not torch.equal(short[k], early[k]) for k in early)


def test_second_call_reuses_the_cache(runs):
    for kind in BASELINES:
        again = runs["again"][kind]
        assert again["_reused"] is True and again["path"] == runs["out"][kind]["path"]
        assert again["settings"] == runs["out"][kind]["settings"]
    assert runs["reuse_seconds"] < 5, runs["reuse_seconds"]


def test_unknown_kind_is_refused(runs):
    with pytest.raises(SpeechFTError, match="unknown kind 'ewc'"):
        stage_baseline(runs["work"], "smoke", runs["corpus"], runs["theta0"], "cpu", "ewc")


@pytest.mark.parametrize("args, message", [
    (["--baseline", "ewc"], "--baseline must be l2 or lora, got 'ewc'"),
    (["--baseline", "l2", "--l2-lambda", "-1"], "--l2-lambda must be a number >= 0, got '-1'"),
    (["--baseline", "l2", "--l2-lambda", "x"], "--l2-lambda must be a number >= 0"),
    (["--baseline", "lora", "--lora-r", "0"], "--lora-r must be a positive integer, got '0'"),
    (["--baseline", "lora", "--l2-lambda", "1"], "--l2-lambda is for --baseline l2"),
    (["--baseline", "l2", "--lora-r", "4"], "--lora-r is for --baseline lora"),
    (["--l2-lambda", "1"], "--l2-lambda needs --baseline l2"),
    (["--baseline", "l2", "--upstream", "hubert_local"], "needs a speechft_* upstream"),
])
def test_bad_baseline_options_are_one_line(tmp_path, tiny_hubert, args, message):
    data = make_pr(tmp_path / "pr")
    proc = recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "exp", *args)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "exp").exists()  # refused before anything is written


def test_evaluate_refuses_a_baseline(tmp_path, tiny_hubert):
    proc = recipe("pr", "evaluate", "--ckpt", tiny_hubert, "--data", tmp_path, "--exp", tmp_path / "e",
                  "--baseline", "lora")
    assert proc.returncode == 1 and "--baseline is for finetune" in proc.stderr


def test_help_lists_the_baseline_options():
    text = ok(recipe("pr", "-h")).stdout
    for option in ("--baseline B", "--l2-lambda X", "--lora-r N", "default 0.01", "default 8"):
        assert option in text
