"""Apply unit permutations to an encoder's weights so that it computes the same function.

Pure functions over a {name: tensor} dict; no files, no statistics (align_stats finds the
permutations). A permutation ``p`` is a gather: the permuted model's unit ``i`` is the original
model's unit ``p[i]``. The rules below are those of a fairseq-style HuBERT / wav2vec 2.0 / WavLM
encoder as s3prl 0.4.18 builds it.

Points (keys of a spec):
- ``cnn.<i>``: channels of conv block i: its conv's rows (and bias), its norm's affine (conv 0's
  GroupNorm in 'default' mode, every block's LayerNorm in 'layer_norm' mode), the next conv's
  input columns; after the last block the feature ``layer_norm``, ``post_extract_proj``'s columns
  and the wav2vec 2.0 heads that read the CNN features (``project_q``, the quantizer).
- ``ffn.<l>``: fc1's rows and bias, fc2's columns.
- ``attn.<l>``: a dict with full-width index permutations ``qk`` and ``v`` (each a head
  reassignment composed with within-head permutations, see ``head_index``): q and k rows (and
  biases) by ``qk``, v rows (and bias) and out_proj's columns by ``v``.
- ``residual``: one permutation of the model dimension shared by every tensor that reads or
  writes the residual stream; it must map pos_conv's channel groups onto whole groups.
"""

import re

import torch

CONV = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.(.+)$")
LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")


def layout_of(weights, n_heads, pos_groups):
    """What the permutation rules need to know about a model: counts and sizes."""
    convs = sorted({int(m.group(1)) for m in map(CONV.match, weights) if m})
    layers = sorted({int(m.group(1)) for m in map(LAYER.match, weights) if m})
    dim = weights["encoder.layer_norm.weight"].shape[0] if "encoder.layer_norm.weight" in weights else None
    return {"n_conv": len(convs), "n_layers": len(layers), "heads": n_heads, "pos_groups": pos_groups,
            "dim": dim, "channels": [weights[f"feature_extractor.conv_layers.{i}.0.weight"].shape[0] for i in convs],
            "ffn": [weights[f"encoder.layers.{l}.fc1.weight"].shape[0] for l in layers],
            "post_extract_proj": "post_extract_proj.weight" in weights}


def head_index(heads, within, head_dim):
    """Full-width index: new unit (h, j) is old unit (heads[h], within[h][j])."""
    heads = torch.as_tensor(heads, dtype=torch.long)
    return torch.cat([heads[h] * head_dim + torch.as_tensor(within[h], dtype=torch.long)
                      for h in range(len(heads))])


def _take(tensor, dim, index):
    return tensor.index_select(dim, index.to(tensor.device))


def _plan(layout, spec):
    """{tensor name: [(dim, index), ...]}: every gather the spec asks for, tensor by tensor."""
    plan = {}

    def add(name, dim, index):
        plan.setdefault(name, []).append((dim, torch.as_tensor(index, dtype=torch.long)))

    n_conv = layout["n_conv"]
    for point, value in spec.items():
        kind, _, number = point.partition(".")
        if kind == "cnn":
            i = int(number)
            plan.setdefault(("conv", i), value)
            if i + 1 < n_conv:
                add(f"feature_extractor.conv_layers.{i + 1}.0.weight", 1, value)
            else:
                for name in ("layer_norm.weight", "layer_norm.bias"):
                    add(name, 0, value)
                for name in ("post_extract_proj.weight", "project_q.weight", "quantizer.weight_proj.weight"):
                    add(name, 1, value)
        elif kind == "ffn":
            prefix = f"encoder.layers.{number}."
            add(prefix + "fc1.weight", 0, value)
            add(prefix + "fc1.bias", 0, value)
            add(prefix + "fc2.weight", 1, value)
        elif kind == "attn":
            prefix = f"encoder.layers.{number}.self_attn."
            for proj, key in (("q_proj", "qk"), ("k_proj", "qk"), ("v_proj", "v")):
                add(prefix + proj + ".weight", 0, value[key])
                add(prefix + proj + ".bias", 0, value[key])
            add(prefix + "out_proj.weight", 1, value["v"])
        elif kind != "residual":
            raise ValueError(f"unknown permutation point {point!r}")
    return plan


def _residual_names(weights, n_layers):
    """(name, dims) of every tensor on the residual stream, dims being the axes of size D on it."""
    rows = ["post_extract_proj.weight", "post_extract_proj.bias", "mask_emb", "encoder.pos_conv.0.bias",
            "encoder.layer_norm.weight", "encoder.layer_norm.bias"]
    cols = ["final_proj.weight"]
    for l in range(n_layers):
        p = f"encoder.layers.{l}."
        cols += [p + f"self_attn.{x}_proj.weight" for x in "qkv"] + [p + "fc1.weight"]
        rows += [p + "self_attn.out_proj.weight", p + "self_attn.out_proj.bias", p + "fc2.weight", p + "fc2.bias"]
        rows += [p + f"{ln}.{w}" for ln in ("self_attn_layer_norm", "final_layer_norm") for w in ("weight", "bias")]
    return [(n, 0) for n in rows if n in weights] + [(n, 1) for n in cols if n in weights]


def check_grouped(perm, groups):
    """True when ``perm`` maps each of ``groups`` equal blocks onto one whole block."""
    perm = torch.as_tensor(perm, dtype=torch.long)
    size = perm.numel() // groups
    blocks = perm.view(groups, size) // size
    return bool((blocks == blocks[:, :1]).all()) and sorted(blocks[:, 0].tolist()) == list(range(groups))


def plan(weights, spec, layout):
    """{tensor name: [(dim, index), ...]}: the gathers ``spec`` asks of each tensor it touches."""
    steps = _plan(layout, spec)
    for i in range(layout["n_conv"]):
        perm = steps.pop(("conv", i), None)
        if perm is None:
            continue
        perm = torch.as_tensor(perm, dtype=torch.long)
        prefix = f"feature_extractor.conv_layers.{i}."
        for name in weights:
            # the conv's rows, its bias, and its norm's affine: every tensor of the block has
            # one entry per output channel along dim 0
            if name.startswith(prefix) and weights[name].dim() >= 1:
                steps.setdefault(name, []).append((0, perm))
    if "residual" in spec:
        r = torch.as_tensor(spec["residual"], dtype=torch.long)
        groups = layout["pos_groups"]
        if not check_grouped(r, groups):
            raise ValueError(f"the residual permutation does not keep pos_conv's {groups} groups whole")
        for name, dim in _residual_names(weights, layout["n_layers"]):
            steps.setdefault(name, []).append((dim, r))
        # pos_conv's input columns are group-local: new group g reads the old group that r maps
        # onto it, in the order r gives within that group
        size = r.numel() // groups
        name = "encoder.pos_conv.0.weight_v" if "encoder.pos_conv.0.weight_v" in weights else "encoder.pos_conv.0.weight"
        steps.setdefault(name, []).append((0, r))
        steps[name].append(("grouped", r.view(groups, size) % size))
    return {name: s for name, s in steps.items() if name in weights}


def gather(tensor, steps):
    """One tensor with its gathers applied (a new contiguous tensor)."""
    for dim, index in steps:
        if dim == "grouped":
            rows = torch.arange(tensor.shape[0]) // index.shape[1]  # each new row's group
            order = index[rows].unsqueeze(-1).expand(-1, -1, tensor.shape[2])
            tensor = torch.gather(tensor, 1, order)
        else:
            tensor = _take(tensor, dim, index)
    return tensor.contiguous()


def apply(weights, spec, layout):
    """A new {name: tensor} dict: ``weights`` with every permutation of ``spec`` applied.

    Tensors no permutation touches are the very same objects (nothing is copied for them).
    """
    steps = plan(weights, spec, layout)
    return {name: gather(t, steps[name]) if name in steps else t for name, t in weights.items()}


def invert(perm):
    perm = torch.as_tensor(perm, dtype=torch.long)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    return inverse


def random_spec(layout, points, generator, residual=False):
    """A random spec over ``points`` ('cnn', 'ffn', 'attn'): for tests and shuffled copies."""
    def perm(n):
        return torch.randperm(n, generator=generator)

    spec = {}
    if "cnn" in points:
        for i, c in enumerate(layout["channels"]):
            if i + 1 < layout["n_conv"] or layout["post_extract_proj"]:
                spec[f"cnn.{i}"] = perm(c)
    if "ffn" in points:
        for l, f in enumerate(layout["ffn"]):
            spec[f"ffn.{l}"] = perm(f)
    if "attn" in points:
        h = layout["heads"]
        d = layout["dim"] // h
        for l in range(layout["n_layers"]):
            heads = perm(h)
            spec[f"attn.{l}"] = {"qk": head_index(heads, [perm(d) for _ in range(h)], d),
                                 "v": head_index(heads, [perm(d) for _ in range(h)], d)}
    if residual:
        g = layout["pos_groups"]
        size = layout["dim"] // g
        spec["residual"] = head_index(perm(g), [perm(size) for _ in range(g)], size)
    return spec
