"""Recipes' evaluate with --seeds and --patience through the real s3prl runner: early stopping,
one process for several seeds, per-item outcomes, and that a seed's numbers do not depend on
the process it ran in."""

import json
import re

from tests.test_recipes import make_ic, make_pr, ok, recipe

FAST = ["--batch-size", "2", "--workers", "0", "--device", "cpu",
        "-o", "config.runner.eval_step=2,,config.runner.log_step=2,,config.runner.save_step=2"]


def test_patience_stops_a_run_whose_dev_metric_does_not_move(tmp_path, tiny_hubert):
    # lr 0: the head never changes, so the second dev pass cannot improve on the first
    data = make_pr(tmp_path / "pr")
    exp = tmp_path / "exp"
    ok(recipe("pr", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, "--seeds", "1,2",
              "--max-steps", "12", "--patience", "1", "--lr", "0", *FAST))
    for seed in (1, 2):
        folder = exp / f"seed{seed}"
        stopping = json.loads((folder / "early_stopping.json").read_text())
        assert stopping == {"patience": 1, "max_steps": 12, "evaluations": 2, "best_step": 2, "last_step": 4,
                            "stopped_early": True}
        results = json.loads((folder / "results.json").read_text())
        assert results["seed"] == str(seed) and results["checkpoint_step"] == 2
        assert results["early_stopping"]["last_step"] == 4
        timing = json.loads((folder / "timing_train.json").read_text())
        assert timing["steps"] == 4 and timing["evaluations"] == 2 and timing["startup"] > 0
        items = json.loads((folder / "items.json").read_text())
        assert items["kind"] == "error_rate" and len(items["items"]) == 2
        assert items["value"] == results["value"]  # recipe_tool checks this too (--check)
        assert "dev per: " in (folder / "train.log").read_text()


def test_a_seed_gives_the_same_numbers_alone_or_after_another_run(tmp_path, tiny_hubert):
    data = make_ic(tmp_path / "ic")
    both, alone = tmp_path / "both", tmp_path / "alone"
    ok(recipe("ic", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", both, "--seeds", "3,4",
              "--steps", "4", "--lr", "1e-2", *FAST))
    ok(recipe("ic", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", alone, "--seeds", "4",
              "--steps", "4", "--lr", "1e-2", *FAST))
    first = json.loads((both / "seed4" / "items.json").read_text())
    second = json.loads((alone / "seed4" / "items.json").read_text())
    assert first["kind"] == "accuracy" and first["items"] == second["items"] and first["value"] == second["value"]
    pattern = r"(?:^|[^\w])dev acc: ([-+0-9.eE]+|nan)"
    dev = [re.findall(pattern, (f / "train.log").read_text()) for f in (both / "seed4", alone / "seed4")]
    assert len(dev[0]) == 2 and dev[0] == dev[1]  # every dev pass, digit for digit


def test_bad_seed_and_patience_options(tmp_path, tiny_hubert):
    data = make_pr(tmp_path / "pr")
    for args, message in ((["--seeds", "1,x"], "--seeds must be"), (["--patience", "0"], "--patience must be")):
        proc = recipe("pr", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "e", *args)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1].startswith("speechft: error: " + message)
    proc = recipe("pr", "finetune", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "f", "--patience", "2")
    assert proc.returncode == 1 and "--patience is for evaluate" in proc.stderr


def test_feature_cache_gives_each_utterance_its_own_features_once(tiny_hubert):
    import s3prl.hub as hub
    import torch

    from speechft_upstream.compat.feature_cache import CachedUpstream

    inner = hub.hubert_local(ckpt=str(tiny_hubert)).eval()
    cached = CachedUpstream(inner, 100, ("test", str(tiny_hubert))).eval()
    g = torch.Generator().manual_seed(0)
    wavs = [torch.randn(16000, generator=g), torch.randn(9600, generator=g)]
    with torch.no_grad():
        batch = cached(wavs)
        alone = [inner([w]) for w in wavs]
        again = cached(list(reversed(wavs)))
    assert (cached.hits, cached.misses) == (2, 2)
    for layer, states in enumerate(batch["hidden_states"]):
        for b, out in enumerate(alone):
            frames = out["hidden_states"][layer].size(1)
            assert torch.equal(states[b, :frames], out["hidden_states"][layer][0])  # not padded into the batch
            assert torch.all(states[b, frames:] == 0)
        assert torch.equal(again["hidden_states"][layer][1], states[0])  # from the cache, in the new order
    assert cached.get_downsample_rates("hidden_states") == inner.get_downsample_rates("hidden_states")
    out = cached(wavs)  # gradients on: the upstream runs as usual (batched), nothing cached
    assert (cached.hits, cached.misses) == (2, 2) and out["hidden_states"][0].requires_grad
