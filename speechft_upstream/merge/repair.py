"""REPAIR (Jordan et al. 2022): give the interpolated model's units their expected statistics.

Interpolating two aligned networks shrinks the variance of their hidden units. For every point
below, each unit's pre-activation mean and standard deviation in θ̂ are reset to the same
interpolation of the endpoints' statistics (λ0·stat(θ0) + Σ λi·stat(θ′i)), and the affine
correction is folded into the weights that produce the unit:

- ``cnnnorm.<i>``: a conv block's norm output (conv 0's GroupNorm in 'default' mode, each
  block's LayerNorm in 'layer_norm' mode), folded into the norm's affine. Blocks without a norm
  have neither bias nor affine to fold a shift into and are left alone.
- ``attn.<l>``: the attention output before out_proj, folded into v_proj's rows and bias
  (each attention row sums to 1, so an affine map of v is the same map of the output).
- ``ffnpre.<l>``: fc1's output (before the activation), folded into fc1's rows and bias.

Points are corrected in forward order, each measured in the model with the earlier corrections
already folded in, so every point reaches its target statistics exactly on this audio.
"""

import torch

from speechft_upstream.merge import align_stats as stats

EPS = 1e-12


def _points(stages, stage):
    if stage == "prelude":
        return [f"cnnnorm.{i}" for i, block in enumerate(stages.model.feature_extractor.conv_layers)
                if len(block) == 4]
    l = stage.split(".")[1]
    return [] if stages.family == "wavlm" else [f"attn.{l}", f"ffnpre.{l}"]


def _feature(got, point):
    value = got[point]
    return value["o"] if isinstance(value, dict) else value


def _fold(weights, point, scale, shift):
    kind, index = point.split(".")
    if kind == "cnnnorm":
        block = f"feature_extractor.conv_layers.{index}.2."
        if block + "weight" not in weights:
            block += "1."  # 'layer_norm' mode: Sequential(TransposeLast, LayerNorm, TransposeLast)
        pairs = [(block + "weight", block + "bias")]
    elif kind == "attn":
        pairs = [(f"encoder.layers.{index}.self_attn.v_proj.weight", f"encoder.layers.{index}.self_attn.v_proj.bias")]
    else:
        pairs = [(f"encoder.layers.{index}.fc1.weight", f"encoder.layers.{index}.fc1.bias")]
    for w, b in pairs:
        weight, bias = weights[w], weights[b]
        view = scale.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))
        weight.mul_(view)  # in place: the model built on these tensors sees the change
        bias.mul_(scale.to(bias.dtype)).add_(shift.to(bias.dtype))


def _moments(models, chunks, stage, points):
    """Per model, {point: Moments} over all pieces; also advances each model's stage inputs."""
    out = []
    for model, xs in zip(models, chunks):
        acc = {}
        for c, x in enumerate(xs):
            xs[c], got = model.run(stage, x, points)
            for point in points:
                value = _feature(got, point)
                acc.setdefault(point, stats.Moments(value.shape[1])).update(value)
        out.append({p: a.result() for p, a in acc.items()})
    return out


def repair(merged, top, family, endpoints, lambdas, audio, max_seconds=None, say=None):
    """``merged`` ({name: tensor}, corrected in place and returned) given the endpoint weight dicts
    and their interpolation coefficients; also returns {point: number of units}."""
    say = say or (lambda m: None)
    pieces = [w for _, w in stats.pieces(audio, max_seconds)]
    ends = [stats.Stages(stats.build_model(top, family, w), family) for w in endpoints]
    merged = {k: v.clone() for k, v in merged.items()}
    target_model = stats.Stages(stats.build_model(top, family, merged), family)
    end_inputs = [list(pieces) for _ in ends]
    inputs = list(pieces)
    done = {}
    for stage in target_model.names:
        points = _points(target_model, stage)
        moments = _moments(ends, end_inputs, stage, points)
        for point in points:
            mean = sum(lam * m[point][0] for lam, m in zip(lambdas, moments))
            std = sum(lam * m[point][1] for lam, m in zip(lambdas, moments))
            scratch = list(inputs)
            (cur_mean, cur_std), = [r[point] for r in _moments([target_model], [scratch], stage, [point])]
            scale = torch.where(cur_std > EPS, std / cur_std.clamp_min(EPS), torch.ones_like(std))
            _fold(merged, point, scale, mean - scale * cur_mean)
            done[point] = int(mean.numel())
        for c, x in enumerate(inputs):
            inputs[c], _ = target_model.run(stage, x)
        say(f"  REPAIR {stage}: {', '.join(points) or '-'}")
    return merged, done


def measure(top, family, weights, audio, max_seconds=None):
    """{point: (mean, std)} of every REPAIR point of one model: for checking what REPAIR did."""
    pieces = [w for _, w in stats.pieces(audio, max_seconds)]
    model = stats.Stages(stats.build_model(top, family, weights), family)
    out, xs = {}, [pieces]
    for stage in model.names:
        out.update(_moments([model], xs, stage, _points(model, stage))[0])
    return out


def repair_outputs(spec, base, finetuned, held, refs, writers, progress):
    """--repair-audio: REPAIR each merged model in memory, then write it."""
    say = (lambda m: print(m, flush=True)) if progress else None
    weights = spec.weights or [1.0] * len(finetuned)
    endpoints = [base.weights] + [ft.weights for ft in finetuned]
    points = 0
    for j, alpha in enumerate(spec.alphas):
        lambdas = [1.0 - alpha] + [alpha * w / sum(weights) for w in weights]
        fixed, done = repair(held[j], base.top, base.family, endpoints, lambdas, spec.repair_audio,
                             spec.align_max_seconds, say)
        for name, tensor in fixed.items():
            refs[j][name] = writers[j].add(tensor)
        held[j], points = None, len(done)
    return {"audio": spec.repair_audio, "points": points}
