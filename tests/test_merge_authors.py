"""`speechft merge` on the authors' other θ′ files (SPIN Lightning, bare {model}), DeCoAR 2.0,
and their merge_model.py's config.yaml beside output_dir/merged_model.pt."""

import pickle

import pytest
import torch
import yaml

from speechft_upstream.checkpoints import files, tiny
from tests.test_merge_cli import HEADS, assert_same, expected, load_weights, speechft
from tests.conftest import assert_ok


def moved(weights, seed, scale=1e-2):
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() and
            not k.startswith("feature_extractor.") else v.clone() for k, v in weights.items()}


def by_hand(base_weights, theta_primes, alpha, keep=HEADS):
    return {k: t0 if k.startswith(keep) else t0 + alpha * (sum(t[k] - t0 for t in theta_primes) / len(theta_primes))
            for k, t0 in base_weights.items()}


def spin_checkpoint(weights, path):
    """As SPIN's Lightning trainer saves: encoder.model.* (no final_proj) among other entries."""
    state = {f"encoder.model.{k}": v for k, v in weights.items() if not k.startswith("final_proj.")}
    state["loss_module.codebook.weight"] = torch.randn(8, 4)
    state["encoder.feat_proj.weight"] = torch.randn(4, 48)  # SPIN's own layers, not HuBERT's
    torch.save({"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "2.1.0", "state_dict": state,
                "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4}]}], "lr_schedulers": [],
                "hyper_parameters": {"config": {"encoder": {"type": "HuBERT"}}}}, path)
    return path


def test_spin_and_bare_model_theta_prime(tmp_path, tiny_hubert):
    base = load_weights(tiny_hubert)
    spin_weights, bare_weights = moved(base, 1), moved(base, 2)
    spin = spin_checkpoint(spin_weights, tmp_path / "spin.ckpt")
    bare = {k: v for k, v in bare_weights.items() if k != "label_embs_concat"}
    bare["label_embs_concat"] = torch.randn(7, 16)  # continued pre-training on other clusters
    torch.save({"model": bare}, tmp_path / "cpt.pt")

    assert_ok(speechft("merge", "--base", tiny_hubert, "--finetuned", spin, tmp_path / "cpt.pt",
                       "--alpha", "0.25", "-o", tmp_path / "m.pt"))
    merged = torch.load(tmp_path / "m.pt", weights_only=True)
    assert_same(merged["model_weight"], by_hand(base, [spin_weights, bare_weights], 0.25))
    kinds = [f["kind"] for f in merged["speechft_provenance"]["finetuned"]]
    assert kinds == ["spin", "model"]
    import s3prl.hub as hub

    assert hub.hubert_local(ckpt=str(tmp_path / "m.pt")) is not None  # stock s3prl loads θ̂


def test_authors_theta_prime_refusals(tmp_path, tiny_hubert):
    base = load_weights(tiny_hubert)
    lightning = {"state_dict": {"encoder.proj.weight": torch.ones(2)}, "epoch": 1}
    torch.save(lightning, tmp_path / "nospin.ckpt")
    wrong = moved(base, 3)
    wrong["encoder.layers.0.fc1.weight"] = torch.zeros(5, 5)
    torch.save({"model": wrong}, tmp_path / "wrong.pt")
    nan = moved(base, 4)
    nan["encoder.layers.1.fc2.bias"][0] = float("nan")
    spin_checkpoint(nan, tmp_path / "nan.ckpt")

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    with open(tmp_path / "payload.ckpt", "wb") as handle:
        torch.save({"state_dict": {"encoder.model.x": torch.ones(1)}, "hyper_parameters": Payload()}, handle)
    cases = {
        "nospin.ckpt": "no 'encoder.model.*' keys",
        "wrong.pt": "parameter 'encoder.layers.0.fc1.weight' has shape (5, 5)",
        "nan.ckpt": "weight 'encoder.layers.1.fc2.bias' holds NaN or Inf values",
        "payload.ckpt": "refused to unpickle it",
    }
    for name, text in cases.items():
        proc = speechft("merge", "--base", tiny_hubert, "--finetuned", tmp_path / name, "--alpha", "0.5",
                        "-o", tmp_path / "out" / "m.pt")
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, (name, proc.stderr)
        assert lines[0].startswith(f"speechft: error: {tmp_path / name}: ") and text in lines[0], (name, lines[0])
        assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_decoar2_merge(tmp_path):
    base_state = tiny.make_tiny_decoar2(seed=0)
    files.save_atomic(base_state, tmp_path / "decoar2.pt")
    fts = [moved(base_state["model"], s) for s in (1, 2)]
    files.save_atomic({"model": fts[0]}, tmp_path / "ft1.pt")
    runner = {"Upstream": {f"model.{k}": v for k, v in fts[1].items()}, "Downstream": {}, "Step": 10,
              "Args": None, "Config": {}}
    torch.save(runner, tmp_path / "dev-best.ckpt")
    cfg = tmp_path / "decoar2_alpha.yaml"  # the authors' keys, no alpha: theirs defaults to 0.25
    cfg.write_text(yaml.safe_dump({"merge_method": "linear", "base_model_name": "decoar2",
                                   "base_model_ckpt_path": str(tmp_path / "decoar2.pt"),
                                   "finetune_model_paths": [str(tmp_path / "ft1.pt"), str(tmp_path / "dev-best.ckpt")],
                                   "output_dir": str(tmp_path / "out")}))
    proc = speechft("merge", "--config", cfg)
    assert_ok(proc)
    merged = torch.load(tmp_path / "out" / "merged_model.pt", weights_only=True)
    assert_same(merged["model"], by_hand(base_state["model"], fts, 0.25, keep=()))
    assert merged["speechft_provenance"]["family"] == "decoar2" and merged["speechft_provenance"]["alpha"] == 0.25
    model = tiny.tiny_decoar2_module()
    model.load_state_dict(merged["model"])  # every DeCoAR 2.0 parameter, strictly
    features = torch.randn(1, 50, 80)
    assert model.eval()(features)[0].shape == (1, 50, 48)
    # their merge_model.py writes the config it ran beside the model
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == yaml.safe_load(cfg.read_text())
    assert "config.yaml" in proc.stdout
    # a wav2vec 2.0 θ′ against the DeCoAR 2.0 θ0 is refused by its names
    proc = speechft("merge", "--base", tmp_path / "decoar2.pt", "--finetuned", tmp_path / "dev-best.ckpt",
                    tiny.write_tiny("wav2vec2", tmp_path / "w2v.pt"), "--alpha", "0.1",
                    "-o", tmp_path / "x.pt")
    assert proc.returncode == 1 and "w2v.pt: is a wav2vec2 checkpoint but θ0" in proc.stderr


def test_authors_config_yaml_follows_the_run(tmp_path, tiny_hubert):
    ft = tmp_path / "ft.pt"
    state = torch.load(tiny_hubert, weights_only=True)
    state["model_weight"] = moved(state["model_weight"], 5)
    torch.save(state, ft)
    data = {"merge_method": "linear", "alpha": 0.25, "base_model_name": "hubert",
            "base_model_ckpt_path": str(tiny_hubert), "finetune_model_paths": [str(ft)],
            "output_dir": str(tmp_path / "out")}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert_ok(speechft("merge", "--config", cfg, "--alpha", "0.5"))
    written = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert written == dict(data, alpha=0.5)  # what ran, not what the file said
    assert_same(load_weights(tmp_path / "out" / "merged_model.pt"), expected(tiny_hubert, [ft], 0.5))
    # a second run would replace it: refused without --force, before merging
    proc = speechft("merge", "--config", cfg)
    assert proc.returncode == 1 and "merged_model.pt: already exists" in proc.stderr
    (tmp_path / "out" / "merged_model.pt").unlink()
    proc = speechft("merge", "--config", cfg)
    assert proc.returncode == 1 and "config.yaml: already exists (use --force" in proc.stderr
    assert not (tmp_path / "out" / "merged_model.pt").exists()
    assert_ok(speechft("merge", "--config", cfg, "--force"))
    assert yaml.safe_load((tmp_path / "out" / "config.yaml").read_text()) == data
    # -o elsewhere: no output_dir, so no config.yaml (their tool has no -o)
    assert_ok(speechft("merge", "--config", cfg, "-o", tmp_path / "elsewhere" / "m.pt"))
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["m.pt"]
