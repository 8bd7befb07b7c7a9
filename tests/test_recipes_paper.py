"""The paper's recipes: fine-tuning features (-s), ER five folds, LibriSpeech bucket files,
IEMOCAP meta data, TED-LIUM 3 ASR (asr_ted). Tiny corpora written by the tests, real runner."""

import json

import pytest
import torch

from speechft_upstream.checkpoints import files
from tests.test_recipes import SMOKE, ok, recipe, make_pr


@pytest.mark.parametrize("features", [None, "hidden_states"])
def test_finetune_features(features, tmp_path, tiny_hubert):
    """finetune reads the last layer by default (the authors' -s last_hidden_state)."""
    data = make_pr(tmp_path / "pr_data")
    exp = tmp_path / "ft"
    extra = ["--features", features] if features else []
    ok(recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, *extra, *SMOKE))
    states = files.load(exp / "dev-best.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["Args"].upstream_feature_selection == (features or "last_hidden_state")
    assert states["Args"].upstream_trainable
    # the weighted sum has one weight per layer; the last layer alone has none
    assert ("weights" in states["Featurizer"]) == (features == "hidden_states")
    if features == "hidden_states":
        assert states["Featurizer"]["weights"].numel() == 3  # CNN output + 2 layers of the tiny HuBERT
    assert (exp / "theta_prime.pt").is_file()


def test_features_refused(tmp_path, tiny_hubert):
    data = make_pr(tmp_path / "pr_data")
    cases = [(["finetune", "--ckpt", tiny_hubert, "--features", "layer3"], "--features must be last_hidden_state or hidden_states"),
             (["evaluate", "--ckpt", tiny_hubert, "--features", "last_hidden_state"], "--features applies to finetune")]
    for args, message in cases:
        proc = recipe("pr", *args, "--data", data, "--exp", tmp_path / "e")
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
        assert not (tmp_path / "e").exists()
