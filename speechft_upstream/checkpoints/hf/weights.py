"""s3prl (fairseq) parameter names -> transformers names, checked both ways (see export_hf.py)."""

import re

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.checkpoints.hf.config import HF_CLASSES

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
