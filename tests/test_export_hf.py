"""speechft export-hf: transformers folders whose hidden states match the s3prl upstream's."""

import json
import math
import os

import pytest
import torch

from speechft_upstream.checkpoints import files
from speechft_upstream import cli
from speechft_upstream.checkpoints.hf import export as export_hf
from speechft_upstream.checkpoints import tiny
from speechft_upstream.errors import SpeechFTError

transformers = pytest.importorskip("transformers")

FAMILIES = ["hubert", "wav2vec2", "wavlm"]
HF_MODEL = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel"}
TOLERANCE = 1e-4

# Base-shaped (group-norm CNN, post-LN) is what tiny.py writes; "large" is the Large/XL shape:
# layer-norm CNN with conv bias, pre-LN transformer (do_stable_layer_norm), normalised waveform.
LARGE = dict(extractor_mode="layer_norm", layer_norm_first=True, conv_bias=True)


def build(family, overrides=None, normalize=False, seed=0):
    """A tiny converted checkpoint of ``family`` built with s3prl's own classes, weights perturbed.

    s3prl's initialisation leaves biases at 0 and layer norms at 1; every float tensor gets
    noise so that a wrongly mapped or transposed tensor cannot go unnoticed.
    """
    torch.manual_seed(seed)
    overrides = dict(overrides or {})
    if family == "hubert":
        from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
        from s3prl.upstream.utils import merge_with_parent

        state = tiny.make_tiny("hubert", seed)
        state["model_cfg"].update(overrides)
        state["task_cfg"]["normalize"] = normalize
        model = HubertModel(merge_with_parent(HubertConfig, state["model_cfg"]),
                            merge_with_parent(HubertPretrainingConfig, state["task_cfg"]),
                            state["dictionaries_symbols"])
        state["model_weight"] = model.state_dict()
    elif family == "wav2vec2":
        from s3prl.upstream.utils import merge_with_parent
        from s3prl.upstream.wav2vec2.wav2vec2_model import Wav2Vec2Config, Wav2Vec2Model

        state = tiny.make_tiny("wav2vec2", seed)
        state["model_cfg"].update(overrides)
        state["task_cfg"]["normalize"] = normalize
        state["model_weight"] = Wav2Vec2Model(merge_with_parent(Wav2Vec2Config, state["model_cfg"])).state_dict()
    else:
        from s3prl.upstream.wavlm.WavLM import WavLM, WavLMConfig

        state = tiny.make_tiny("wavlm", seed)
        state["cfg"].update(overrides, normalize=normalize)
        state["model"] = WavLM(WavLMConfig(state["cfg"])).state_dict()
    weights = files.weights(state, family)
    generator = torch.Generator().manual_seed(seed + 1)
    for name in list(weights):
        value = weights[name].detach().clone()
        if value.is_floating_point():
            noise = 0.05 * torch.randn(value.shape, generator=generator)
            value = value + (noise.abs() if name.endswith("weight_g") else noise)
        weights[name] = value.contiguous()
    return state


def write(tmp_path, family, name=None, **kwargs):
    path = tmp_path / (name or f"{family}.pt")
    files.save_atomic(build(family, **kwargs), path)
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """1.2 s of a real audio file (sine sweep plus noise, 16-bit PCM), read back as float32."""
    import numpy as np
    import soundfile

    path = tmp_path_factory.mktemp("audio") / "utt.wav"
    t = np.arange(19200) / 16000
    rng = np.random.default_rng(0)
    wave = 0.4 * np.sin(2 * math.pi * (150 + 300 * t) * t) + 0.05 * rng.standard_normal(t.shape)
    soundfile.write(path, wave, 16000, subtype="PCM_16")
    data, rate = soundfile.read(path, dtype="float32")
    assert rate == 16000
    return torch.from_numpy(data)


def s3prl_hidden_states(family, ckpt, wav):
    import s3prl.hub as hub

    upstream = getattr(hub, f"{family}_local")(ckpt=str(ckpt)).eval()
    with torch.no_grad():
        return upstream([wav])["hidden_states"]


def hf_hidden_states(outdir, wav):
    model = transformers.AutoModel.from_pretrained(outdir).eval()
    with torch.no_grad():
        return model, model(wav[None], output_hidden_states=True).hidden_states


def max_diffs(ours, theirs):
    assert len(ours) == len(theirs)
    diffs = []
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        diffs.append(float((a - b).abs().max()))
    return diffs


@pytest.mark.parametrize("shape", ["base", "large"])
@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_s3prl(family, shape, tmp_path, audio):
    large = shape == "large"
    ckpt = write(tmp_path, family, overrides=LARGE if large else None, normalize=large)
    outdir = tmp_path / "hf"
    summary = export_hf.export(ckpt, outdir)
    assert "\n" not in summary and HF_MODEL[family] in summary and str(outdir) in summary
    assert sorted(os.listdir(outdir)) == ["config.json", "model.safetensors", "preprocessor_config.json"]

    expected = s3prl_hidden_states(family, ckpt, audio)
    # s3prl layer-norms the waveform inside the expert when the checkpoint says so; transformers
    # leaves that to its feature extractor: give the transformers model the tensor s3prl's sees.
    seen = torch.nn.functional.layer_norm(audio, audio.shape) if large else audio
    model, hidden = hf_hidden_states(outdir, seen)
    assert type(model).__name__ == HF_MODEL[family]
    assert model.config.do_stable_layer_norm is large
    assert model.config.feat_extract_norm == ("layer" if large else "group")
    assert len(hidden) == 3 and hidden[0].shape == (1, 59, 48)
    # the last hidden state is the encoder output (after the final layer norm of pre-LN models)
    assert torch.equal(hidden[-1], model(seen[None]).last_hidden_state)
    diffs = max_diffs(expected, hidden)
    print(f"{family}/{shape}: max abs diff per hidden state {diffs}")
    assert max(diffs) < TOLERANCE, diffs

    extractor = transformers.AutoFeatureExtractor.from_pretrained(outdir)
    assert extractor.do_normalize is large
    assert extractor.return_attention_mask is large


def test_config_comes_from_the_checkpoint(tmp_path, audio):
    overrides = dict(activation_fn="gelu_accurate", conv_feature_layers="[(24,8,4)] + [(40,4,2)] * 3 + [(40,2,2)]",
                     conv_pos=8, conv_pos_groups=2, num_buckets=12, max_distance=40)
    ckpt = write(tmp_path, "wavlm", overrides=overrides)
    export_hf.export(ckpt, tmp_path / "hf")
    diffs = max_diffs(s3prl_hidden_states("wavlm", ckpt, audio), hf_hidden_states(tmp_path / "hf", audio)[1])
    assert max(diffs) < TOLERANCE, diffs
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["WavLMModel"]
    assert config["hidden_act"] == "gelu_new"  # fairseq's gelu_accurate is the tanh approximation
    assert config["conv_dim"] == [24, 40, 40, 40, 40]
    assert config["conv_kernel"] == [8, 4, 4, 4, 2]
    assert config["conv_stride"] == [4, 2, 2, 2, 2]
    assert (config["num_conv_pos_embeddings"], config["num_conv_pos_embedding_groups"]) == (8, 2)
    assert (config["num_buckets"], config["max_bucket_distance"]) == (12, 40)
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["intermediate_size"]) == (48, 2, 4, 96)
    assert config["speechft_source"]["family"] == "wavlm"


def test_cnn_as_wide_as_the_encoder_has_no_projection(tmp_path, audio):
    """fairseq drops post_extract_proj when the CNN width equals the encoder's: an identity in transformers."""
    ckpt = write(tmp_path, "hubert", overrides=dict(conv_feature_layers="[(48,10,5)] + [(48,3,2)] * 4 + [(48,2,2)] * 2"))
    assert not any(k.startswith("post_extract_proj") for k in files.load(ckpt)["model_weight"])
    summary = export_hf.export(ckpt, tmp_path / "hf")
    assert "feature projection set to identity" in summary
    diffs = max_diffs(s3prl_hidden_states("hubert", ckpt, audio), hf_hidden_states(tmp_path / "hf", audio)[1])
    assert max(diffs) < TOLERANCE, diffs


def test_pretraining_only_weights_are_named_in_the_summary(tmp_path):
    summary = export_hf.export(write(tmp_path, "hubert"), tmp_path / "hf")
    assert "left out (pre-training only): label_embs_concat, final_proj.weight, final_proj.bias" in summary
    summary = export_hf.export(write(tmp_path, "wav2vec2"), tmp_path / "hf2")
    assert "project_q.weight" in summary and "final_proj.bias" in summary
    # mask_emb has a slot (masked_spec_embed) and is carried over
    from safetensors.torch import load_file

    state = build("hubert")
    saved = load_file(tmp_path / "hf" / "model.safetensors")
    assert torch.equal(saved["masked_spec_embed"], state["model_weight"]["mask_emb"])


def test_half_precision_checkpoint_stays_half(tmp_path):
    state = build("hubert")
    state["model_weight"] = {k: v.half() for k, v in state["model_weight"].items()}
    ckpt = tmp_path / "half.pt"
    files.save_atomic(state, ckpt)
    summary = export_hf.export(ckpt, tmp_path / "hf")
    assert "float16" in summary
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "hf" / "model.safetensors")
    assert saved["encoder.layers.0.attention.q_proj.weight"].dtype == torch.float16
    assert torch.equal(saved["encoder.layers.0.attention.q_proj.weight"],
                       state["model_weight"]["encoder.layers.0.self_attn.q_proj.weight"])


def _no_temp_left(folder):
    return [name for name in os.listdir(folder) if name.endswith(".tmp")] == []


def test_refuses_non_empty_outdir_without_force(tmp_path):
    ckpt = write(tmp_path, "hubert")
    outdir = tmp_path / "hf"
    outdir.mkdir()
    (outdir / "notes.txt").write_text("mine")
    with pytest.raises(SpeechFTError, match=r"hf: folder exists and is not empty; use --force"):
        export_hf.export(ckpt, outdir)
    assert os.listdir(outdir) == ["notes.txt"]

    export_hf.export(ckpt, outdir, force=True)
    assert sorted(os.listdir(outdir)) == ["config.json", "model.safetensors", "notes.txt", "preprocessor_config.json"]
    assert (outdir / "notes.txt").read_text() == "mine"
    # --force again replaces our files with the new export
    other = write(tmp_path, "wavlm")
    export_hf.export(other, outdir, force=True)
    assert json.loads((outdir / "config.json").read_text())["architectures"] == ["WavLMModel"]
    assert _no_temp_left(tmp_path)


def test_empty_outdir_is_fine_and_nested_parents_are_made(tmp_path):
    ckpt = write(tmp_path, "wav2vec2")
    (tmp_path / "empty").mkdir()
    export_hf.export(ckpt, tmp_path / "empty")
    export_hf.export(ckpt, tmp_path / "a" / "b" / "hf")
    assert (tmp_path / "empty" / "model.safetensors").is_file()
    assert (tmp_path / "a" / "b" / "hf" / "config.json").is_file()
    assert _no_temp_left(tmp_path) and _no_temp_left(tmp_path / "a" / "b")


def test_refuses_outdir_that_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(SpeechFTError, match="taken: exists and is not a folder"):
        export_hf.export(write(tmp_path, "hubert"), target)


def test_refuses_foreign_checkpoints(tmp_path):
    decoar = tmp_path / "decoar2.pt"
    files.save_atomic({"model": {"encoder.weight": torch.ones(2, 2)}}, decoar)
    with pytest.raises(SpeechFTError, match=r"decoar2\.pt: is a decoar2 checkpoint; export-hf writes hubert, wav2vec2, wavlm"):
        export_hf.export(decoar, tmp_path / "out1")
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n")
    with pytest.raises(SpeechFTError, match=r"notes\.pt: not a PyTorch checkpoint"):
        export_hf.export(text, tmp_path / "out2")
    with pytest.raises(SpeechFTError, match=r"missing\.pt: no such file"):
        export_hf.export(tmp_path / "missing.pt", tmp_path / "out3")
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3))
    assert _no_temp_left(tmp_path)


def test_refuses_variant_transformers_cannot_express(tmp_path):
    ckpt = write(tmp_path, "wavlm", overrides=dict(gru_rel_pos=False))
    with pytest.raises(SpeechFTError, match=r"wavlm\.pt: this wavlm variant has no transformers equivalent: gru_rel_pos=False"):
        export_hf.export(ckpt, tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and _no_temp_left(tmp_path)


def test_every_tensor_must_find_a_place_and_every_parameter_be_filled(tmp_path):
    state = build("hubert")
    state["model_weight"]["encoder.layers.0.self_attn.extra_gate"] = torch.ones(3)
    files.save_atomic(state, tmp_path / "extra.pt")
    with pytest.raises(SpeechFTError, match=r"extra\.pt: weight 'encoder\.layers\.0\.self_attn\.extra_gate' has no place in transformers' HubertModel"):
        export_hf.export(tmp_path / "extra.pt", tmp_path / "hf")

    state = build("hubert")
    del state["model_weight"]["encoder.layers.1.fc2.bias"]
    files.save_atomic(state, tmp_path / "short.pt")
    with pytest.raises(SpeechFTError, match=r"short\.pt: no weight in the checkpoint for transformers' 'encoder\.layers\.1\.feed_forward\.output_dense\.bias'"):
        export_hf.export(tmp_path / "short.pt", tmp_path / "hf")

    state = build("wav2vec2")
    weights = state["model_weight"]
    weights["encoder.layers.0.fc1.weight"] = weights["encoder.layers.0.fc1.weight"].t().contiguous()
    files.save_atomic(state, tmp_path / "bent.pt")
    with pytest.raises(SpeechFTError, match=r"bent\.pt: weight 'encoder\.layers\.0\.fc1\.weight' has shape \(48, 96\), but transformers' 'encoder\.layers\.0\.feed_forward\.intermediate_dense\.weight' has shape \(96, 48\)"):
        export_hf.export(tmp_path / "bent.pt", tmp_path / "hf")
    assert not (tmp_path / "hf").exists() and _no_temp_left(tmp_path)


def test_conv_layers_are_parsed_not_evaluated(tmp_path):
    state = build("hubert")
    state["model_cfg"]["conv_feature_layers"] = "[(32,10,5)] + __import__('os').getcwd()"
    files.save_atomic(state, tmp_path / "evil.pt")
    with pytest.raises(SpeechFTError, match=r"evil\.pt: cannot read conv_feature_layers"):
        export_hf.export(tmp_path / "evil.pt", tmp_path / "hf")


def test_cli(tmp_path, capsys):
    ckpt = write(tmp_path, "wavlm")
    assert cli.main(["export-hf", str(ckpt), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and out.out.startswith(f"wrote {tmp_path / 'hf'}: WavLMModel")
    assert cli.main(["export-hf", str(ckpt), str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"speechft: error: {tmp_path / 'hf'}: folder exists and is not empty; use --force to write into it"]
    assert cli.main(["export-hf", str(ckpt), str(tmp_path / "hf"), "--force"]) == 0


def test_positional_conv_saved_in_other_weight_norm_forms(tmp_path, audio):
    """torch's newer parametrization names, or a plain weight without weight norm, export the same model."""
    state = build("wav2vec2")
    files.save_atomic(state, tmp_path / "hooks.pt")
    weights = state["model_weight"]
    g, v = weights.pop("encoder.pos_conv.0.weight_g"), weights.pop("encoder.pos_conv.0.weight_v")
    weights["encoder.pos_conv.0.parametrizations.weight.original0"] = g
    weights["encoder.pos_conv.0.parametrizations.weight.original1"] = v
    files.save_atomic(state, tmp_path / "param.pt")
    del weights["encoder.pos_conv.0.parametrizations.weight.original0"]
    del weights["encoder.pos_conv.0.parametrizations.weight.original1"]
    weights["encoder.pos_conv.0.weight"] = torch._weight_norm(v, g, 2)
    files.save_atomic(state, tmp_path / "plain.pt")

    outputs = {}
    for name in ("hooks", "param", "plain"):
        summary = export_hf.export(tmp_path / f"{name}.pt", tmp_path / f"hf_{name}")
        assert ("weight-norm (g, v)" in summary) is (name == "plain")
        outputs[name] = hf_hidden_states(tmp_path / f"hf_{name}", audio)[1]
    assert max(max_diffs(outputs["hooks"], outputs["param"])) == 0.0
    assert max(max_diffs(outputs["hooks"], outputs["plain"])) < 1e-5
