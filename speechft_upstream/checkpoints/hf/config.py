"""transformers configs (HubertConfig, Wav2Vec2Config, WavLMConfig) from s3prl model configs.

The checkpoint's own model config is resolved with s3prl's config classes, so the defaults are the
ones s3prl builds the model with; options transformers cannot express are refused by name.
"""

import ast

from speechft_upstream.errors import SpeechFTError


SUPPORTED = ("hubert", "wav2vec2", "wavlm")

HF_CLASSES = {
    "hubert": ("HubertConfig", "HubertModel"),
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
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


def model_config(state, family, path):
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
