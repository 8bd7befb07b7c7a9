"""``speechft export-hf``: a converted encoder as a HuggingFace transformers model folder.

The transformers config is built from the checkpoint's own model config (resolved with s3prl's
config classes, so the defaults are the ones s3prl builds the model with), the weights are
renamed from s3prl's (fairseq) names to transformers' names, and the mapping is checked both
ways: every transformers parameter must be filled with a tensor of its shape, and every tensor
of the checkpoint must land somewhere, except the few that only serve pre-training
(``PRETRAINING_ONLY``). The folder is written by transformers' own ``save_pretrained``
(config.json + model.safetensors) plus a ``preprocessor_config.json`` for the feature extractor,
into a temporary folder beside OUTDIR that is then renamed into place.
"""

import ast
import os
import re
import shutil
import tempfile
from pathlib import Path

from speechft_upstream import checkpoint
from speechft_upstream.errors import SpeechFTError

SUPPORTED = ("hubert", "wav2vec2", "wavlm")

HF_CLASSES = {
    "hubert": ("HubertConfig", "HubertModel"),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}

# Checkpoint tensors that only serve pre-training and have no place in a bare encoder
# (regular expressions on the s3prl/fairseq names). ``mask_emb`` joins them only when the
# transformers model has no ``masked_spec_embed`` (it has one whenever spec-augment is on).
PRETRAINING_ONLY = {
    # HuBERT: projection to the code space, the cluster embeddings, the optional target GLU
    "hubert": (r"final_proj\..*", r"label_embs_concat", r"target_glu\..*"),
    # wav2vec 2.0: the quantizer (codebooks, its projection), the target projections
    "wav2vec2": (r"quantizer\..*", r"project_q\..*", r"final_proj\..*", r"target_glu\..*"),
    # WavLM: nothing besides mask_emb (the converted checkpoints hold the encoder only)
    "wavlm": (),
}

# fairseq activation name -> transformers ACT2FN name (fairseq's gelu is the exact erf form,
# gelu_accurate/gelu_fast the tanh approximation, which is transformers' gelu_new).
ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_accurate": "gelu_new",
    "gelu_fast": "gelu_new",
    "relu": "relu",
    "tanh": "tanh",
    "linear": "linear",
}

WRITTEN = ("config.json", "model.safetensors", "preprocessor_config.json")


# ---------------------------------------------------------------------------------------------
# configuration


def _conv_layers(spec, path):
    """Parse fairseq's ``conv_feature_layers`` expression without eval().

    The string is Python like ``"[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2"``; only
    lists, tuples, integers, ``+`` and ``*`` are accepted.
    """

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.List):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(value(e) for e in node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = value(node.left), value(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(type(node).__name__)

    try:
        layers = value(ast.parse(str(spec), mode="eval"))
        if not isinstance(layers, list) or not layers:
            raise ValueError("not a non-empty list")
        for layer in layers:
            if not (isinstance(layer, tuple) and len(layer) == 3 and all(type(v) is int and v > 0 for v in layer)):
                raise ValueError(f"bad layer {layer!r}")
    except (SyntaxError, ValueError, TypeError, RecursionError) as err:
        raise SpeechFTError(f"{path}: cannot read conv_feature_layers {spec!r} ({err})") from None
    return layers


def _model_config(state, family, path):
    """The checkpoint's model config with s3prl's defaults filled in, and whether the waveform is normalised."""
    try:
        if family == "hubert":
            from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertPretrainingConfig
            from s3prl.upstream.utils import merge_with_parent

            cfg = merge_with_parent(HubertConfig, dict(state["model_cfg"]))
            normalize = merge_with_parent(HubertPretrainingConfig, dict(state["task_cfg"])).normalize
        elif family == "wav2vec2":
            from s3prl.upstream.utils import merge_with_parent
            from s3prl.upstream.wav2vec2.wav2vec2_model import AudioPretrainingConfig, Wav2Vec2Config

            cfg = merge_with_parent(Wav2Vec2Config, dict(state["model_cfg"]))
            normalize = merge_with_parent(AudioPretrainingConfig, dict(state["task_cfg"])).normalize
        else:
            from s3prl.upstream.wavlm.WavLM import WavLMConfig

            cfg = WavLMConfig(dict(state["cfg"]))
            normalize = cfg.normalize
    except Exception as err:  # a malformed config: s3prl could not build this model either
        raise SpeechFTError(f"{path}: unreadable {family} model config ({type(err).__name__}: {err})") from None
    return cfg, bool(normalize)


def _refuse_unsupported(cfg, family, path):
    """Model variants transformers' classes cannot express: refuse rather than export a different model."""
    problems = []
    if str(getattr(cfg, "layer_type", "transformer")) != "transformer":
        problems.append(f"layer_type={cfg.layer_type} (only transformer layers)")
    if int(getattr(cfg, "pos_conv_depth", 1)) != 1:
        problems.append(f"pos_conv_depth={cfg.pos_conv_depth} (only a single positional conv)")
    if getattr(cfg, "quantize_input", False):
        problems.append("quantize_input=True")
    if int(getattr(cfg, "crop_seq_to_multiple", 1)) != 1:
        problems.append(f"crop_seq_to_multiple={cfg.crop_seq_to_multiple}")
    if str(cfg.extractor_mode) not in ("default", "layer_norm"):
        problems.append(f"extractor_mode={cfg.extractor_mode}")
    if str(cfg.activation_fn) not in ACTIVATIONS:
        problems.append(f"activation_fn={cfg.activation_fn}")
    if family == "wavlm":
        if not getattr(cfg, "relative_position_embedding", False):
            problems.append("relative_position_embedding=False (WavLMModel always uses relative position bias)")
        if not getattr(cfg, "gru_rel_pos", False):
            problems.append("gru_rel_pos=False (WavLMModel always gates the relative position bias)")
    if problems:
        raise SpeechFTError(
            f"{path}: this {family} variant has no transformers equivalent: {'; '.join(problems)}"
        )


def build_hf_config(cfg, family, path="checkpoint"):
    """The transformers config of the same architecture as the s3prl model config ``cfg``."""
    import transformers

    _refuse_unsupported(cfg, family, path)
    conv = _conv_layers(cfg.conv_feature_layers, path)
    common = dict(
        hidden_size=int(cfg.encoder_embed_dim),
        num_hidden_layers=int(cfg.encoder_layers),
        num_attention_heads=int(cfg.encoder_attention_heads),
        intermediate_size=int(cfg.encoder_ffn_embed_dim),
        hidden_act=ACTIVATIONS[str(cfg.activation_fn)],
        hidden_dropout=float(cfg.dropout),
        attention_dropout=float(cfg.attention_dropout),
        activation_dropout=float(cfg.activation_dropout),
        feat_proj_dropout=float(cfg.dropout_input),
        layerdrop=float(cfg.encoder_layerdrop),
        layer_norm_eps=1e-5,  # fairseq's LayerNorm / GroupNorm
        feat_extract_norm="group" if str(cfg.extractor_mode) == "default" else "layer",
        feat_extract_activation="gelu",  # fairseq's CNN and positional conv use nn.GELU()
        conv_dim=[c[0] for c in conv],
        conv_kernel=[c[1] for c in conv],
        conv_stride=[c[2] for c in conv],
        conv_bias=bool(cfg.conv_bias),
        num_conv_pos_embeddings=int(cfg.conv_pos),
        num_conv_pos_embedding_groups=int(cfg.conv_pos_groups),
        do_stable_layer_norm=bool(cfg.layer_norm_first),
    )
    if family == "hubert":
        common.update(feat_proj_layer_norm=True)  # HuBERT's CNN output layer norm
    if family == "wavlm":
        common.update(num_buckets=int(cfg.num_buckets), max_bucket_distance=int(cfg.max_distance))
    config_class = getattr(transformers, HF_CLASSES[family][0])
    config = config_class(**common)
    # s3prl's last hidden state is the encoder's output, after the final layer norm of pre-LN
    # (Large) models; transformers 5 returns the last layer's raw output as hidden_states[-1]
    # unless the config ties it to last_hidden_state. For post-LN models the two are the same.
    config.tie_last_hidden_states = True
    return config


# ---------------------------------------------------------------------------------------------
# weights

_LAYER_RENAMES = (
    ("self_attn.k_proj.", "attention.k_proj."),
    ("self_attn.q_proj.", "attention.q_proj."),
    ("self_attn.v_proj.", "attention.v_proj."),
    ("self_attn.out_proj.", "attention.out_proj."),
    ("self_attn.grep_linear.", "attention.gru_rel_pos_linear."),
    ("self_attn.relative_attention_bias.", "attention.rel_attn_embed."),
    ("self_attn_layer_norm.", "layer_norm."),
    ("fc1.", "feed_forward.intermediate_dense."),
    ("fc2.", "feed_forward.output_dense."),
    ("final_layer_norm.", "final_layer_norm."),
)
_LAYER_EXACT = {"self_attn.grep_a": "attention.gru_rel_pos_const"}
_POS_CONV = "encoder.pos_conv_embed.conv."


def _hf_name(name, weight_norm_names):
    """transformers' name for the s3prl tensor ``name``, or None if the name has no counterpart."""
    if name == "mask_emb":
        return "masked_spec_embed"
    if name.startswith("layer_norm."):
        return "feature_projection." + name
    if name.startswith("post_extract_proj."):
        return "feature_projection.projection." + name[len("post_extract_proj."):]
    if name.startswith("encoder.layer_norm."):
        return name
    m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(0|2|2\.1)\.(weight|bias)", name)
    if m:
        index, part, kind = m.groups()
        # 0: the conv; 2: GroupNorm (extractor_mode=default, first layer); 2.1: LayerNorm inside
        # (TransposeLast, LayerNorm, TransposeLast) (extractor_mode=layer_norm, every layer)
        return f"feature_extractor.conv_layers.{index}.{'conv' if part == '0' else 'layer_norm'}.{kind}"
    m = re.fullmatch(r"encoder\.pos_conv\.0\.(.+)", name)
    if m:
        rest = m.group(1)
        if rest == "bias":
            return _POS_CONV + "bias"
        # the weight-normed conv: old-style hooks (weight_g, weight_v) or torch parametrizations
        g_name, v_name = weight_norm_names
        if rest in ("weight_g", "parametrizations.weight.original0"):
            return _POS_CONV + g_name
        if rest in ("weight_v", "parametrizations.weight.original1"):
            return _POS_CONV + v_name
        return None
    m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", name)
    if m:
        index, rest = m.groups()
        if rest in _LAYER_EXACT:
            return f"encoder.layers.{index}.{_LAYER_EXACT[rest]}"
        for old, new in _LAYER_RENAMES:
            if rest.startswith(old):
                return f"encoder.layers.{index}.{new}{rest[len(old):]}"
    return None


def _weight_norm_names(hf_keys):
    """How this transformers/torch pair names the positional conv's weight-norm tensors (g, v)."""
    if _POS_CONV + "parametrizations.weight.original0" in hf_keys:
        return "parametrizations.weight.original0", "parametrizations.weight.original1"
    if _POS_CONV + "weight_g" in hf_keys:
        return "weight_g", "weight_v"
    return "weight", "weight"  # no weight norm in this model: handled in map_weights


def map_weights(params, family, hf_state, path="checkpoint"):
    """Rename ``params`` to the names of ``hf_state``; returns (mapped, left_out, notes).

    Raises SpeechFTError naming the first tensor that has no place, the first transformers
    parameter left unfilled, or the first shape that differs.
    """
    import torch

    hf_keys = set(hf_state)
    g_name, v_name = _weight_norm_names(hf_keys)
    pretraining = [re.compile(p) for p in PRETRAINING_ONLY[family]]
    mapped, left_out, sources, notes = {}, [], {}, []

    params = dict(params)
    plain_pos = "encoder.pos_conv.0.weight"
    if plain_pos in params and g_name != "weight":
        # a positional conv saved without weight norm: split it into (g, v) with g = |w| over
        # all dims but the kernel axis (dim=2), v = w, which reproduces w exactly
        weight = params.pop(plain_pos)
        notes.append("positional conv weight split into weight-norm (g, v)")
        params["encoder.pos_conv.0.weight_g"] = torch.linalg.vector_norm(weight, dim=(0, 1), keepdim=True)
        params["encoder.pos_conv.0.weight_v"] = weight
    for name, tensor in params.items():
        target = _hf_name(name, (g_name, v_name))
        if target is None or target not in hf_keys:
            if any(p.fullmatch(name) for p in pretraining) or (name == "mask_emb" and target not in hf_keys):
                left_out.append(name)
                continue
            raise SpeechFTError(
                f"{path}: weight {name!r} has no place in transformers' {HF_CLASSES[family][1]}"
                + (f" (would be {target!r})" if target else "")
            )
        if target in mapped:
            raise SpeechFTError(f"{path}: weights {sources[target]!r} and {name!r} both map to {target!r}")
        if tuple(tensor.shape) != tuple(hf_state[target].shape):
            raise SpeechFTError(
                f"{path}: weight {name!r} has shape {tuple(tensor.shape)}, but transformers' "
                f"{target!r} has shape {tuple(hf_state[target].shape)}"
            )
        mapped[target] = tensor
        sources[target] = name

    if "feature_projection.projection.weight" in hf_keys and "feature_projection.projection.weight" not in mapped \
            and not any(n.startswith("post_extract_proj.") for n in params):
        # fairseq drops post_extract_proj when the CNN already has the encoder's width
        weight = hf_state["feature_projection.projection.weight"]
        if weight.shape[0] == weight.shape[1]:
            mapped["feature_projection.projection.weight"] = torch.eye(weight.shape[0], dtype=weight.dtype)
            mapped["feature_projection.projection.bias"] = torch.zeros(weight.shape[0], dtype=weight.dtype)
            notes.append("feature projection set to identity (the checkpoint has no post_extract_proj)")

    missing = [k for k in hf_state if k not in mapped]
    if missing:
        raise SpeechFTError(
            f"{path}: no weight in the checkpoint for transformers' {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    return mapped, left_out, notes


# ---------------------------------------------------------------------------------------------
# writing


def _check_outdir(outdir, force):
    if outdir.exists() and not outdir.is_dir():
        raise SpeechFTError(f"{outdir}: exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise SpeechFTError(f"{outdir}: folder exists and is not empty; use --force to write into it")


def _publish(tmp, outdir, force):
    """Move the finished folder ``tmp`` into place as ``outdir``, each step a rename."""
    _check_outdir(outdir, force)  # again: something may have appeared there meanwhile
    if outdir.is_dir() and not any(outdir.iterdir()):
        outdir.rmdir()
    if not outdir.exists():
        os.rename(tmp, outdir)
        return
    # --force on a non-empty folder: replace our files one by one, leave the others alone
    for name in sorted(os.listdir(tmp)):
        os.replace(tmp / name, outdir / name)
    shutil.rmtree(tmp, ignore_errors=True)


def export(ckpt, outdir, force=False):
    """Write ``ckpt`` (a converted hubert/wav2vec2/wavlm checkpoint) as a transformers folder.

    Returns a one-line summary.
    """
    import torch
    import transformers

    from speechft_upstream import __version__

    outdir = Path(outdir)
    _check_outdir(outdir, force)

    state, family = checkpoint.read_encoder(ckpt)
    if family not in SUPPORTED:
        raise SpeechFTError(
            f"{ckpt}: is a {family} checkpoint; export-hf writes {', '.join(SUPPORTED)} encoders only "
            "(transformers has no such model)"
        )
    params = checkpoint.weights(state, family)
    cfg, normalize = _model_config(state, family, ckpt)
    config = build_hf_config(cfg, family, ckpt)
    config.speechft_source = {"file": Path(ckpt).name, "family": family, "speechft_version": __version__}

    model_class = getattr(transformers, HF_CLASSES[family][1])
    model = model_class(config).eval()
    mapped, left_out, notes = map_weights(params, family, model.state_dict(), ckpt)

    float_dtypes = {t.dtype for t in params.values() if t.is_floating_point()}
    dtype = float_dtypes.pop() if len(float_dtypes) == 1 else torch.float32
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=True)
    if dtype != torch.float32:
        model = model.to(dtype)

    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=normalize,
        # group-norm CNNs were trained without attention masks (transformers' convention)
        return_attention_mask=config.feat_extract_norm == "layer",
    )

    parent = outdir.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", suffix=".tmp", dir=parent))
    except OSError as err:
        raise SpeechFTError(f"{outdir}: cannot create the folder ({err.strerror or err})") from None
    bars = transformers.utils.logging.is_progress_bar_enabled()
    try:
        transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        written = sorted(os.listdir(tmp))
        if "model.safetensors" not in written:
            raise SpeechFTError(f"{outdir}: transformers wrote {written}, expected a single model.safetensors")
        # mkdtemp makes 0700 and safetensors may write 0600: give everything the usual modes
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for name in written:
            os.chmod(tmp / name, 0o666 & ~umask)
        _publish(tmp, outdir, force)
    except OSError as err:
        raise SpeechFTError(f"{outdir}: cannot write the model folder ({err.strerror or err})") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    count = sum(p.numel() for p in model.parameters())
    summary = (
        f"wrote {outdir}: {HF_CLASSES[family][1]} ({config.num_hidden_layers} layers, {config.hidden_size} dims, "
        f"{count:,} parameters, {str(dtype).replace('torch.', '')}) from {family} checkpoint {ckpt}; "
        f"files: {', '.join(written)}"
    )
    if left_out:
        summary += f"; left out (pre-training only): {', '.join(left_out)}"
    if notes:
        summary += "; " + "; ".join(notes)
    return summary
