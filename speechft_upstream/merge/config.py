"""What to merge: command-line options and ``--config merge.yaml``, validated before any work.

The YAML file takes speechft's own keys and also the keys of the Speech-FT authors' merge
configs (``merge_model.py -c``), so their configs run unchanged. Command-line options override
the file. Every option is checked here, before a checkpoint is opened or an output created.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.merge.methods import DEFAULT_DENSITY, DEFAULT_EPSILON, DEFAULT_GAMMA, METHODS, WEIGHTED

OURS = ("base", "finetuned", "alpha", "method", "output", "weights", "density", "seed",
        "layer_alpha", "extrapolate", "force", "register", "family", "gamma", "epsilon", "audio",
        "offdiag_scale", "max_seconds", "align_audio", "align_points", "repair_audio", "align_max_seconds")
# The authors' keys and the speechft key each one feeds.
AUTHORS = {"merge_method": "method", "base_model_ckpt_path": "base", "finetune_model_paths": "finetuned",
           "base_model_name": "family", "output_dir": "output_dir", "alpha": "alpha",
           "finetune_model_names": None}
# base_model_name values of the authors' configs, and the checkpoint their code uses when
# base_model_ckpt_path is empty (s3prl's converted checkpoints).
_HF = "https://huggingface.co/s3prl/converted_ckpts/resolve/main/"
AUTHOR_MODELS = {
    "hubert": ("hubert", _HF + "hubert_base_ls960.pt"),
    "wav2vec2": ("wav2vec2", _HF + "wav2vec_small.pt"),
    "decoar2": ("decoar2", _HF + "checkpoint_decoar2.pt"),
    "wavlm_base_plus": ("wavlm", _HF + "wavlm_base_plus.pt"),
    "wavlm": ("wavlm", None),
}


@dataclass
class MergeSpec:
    base: str
    finetuned: list
    alphas: list
    outputs: list  # one path per α, same order
    method: str = "linear"
    weights: list = None
    density: float = None
    seed: int = 0
    layer_alpha: object = None  # None, a list of floats, or ("linear", start, end)
    extrapolate: bool = False
    force: bool = False
    register: str = None
    family: str = None
    gamma: float = None  # breadcrumbs: fraction of largest |τ| dropped
    epsilon: float = None  # della: keep probabilities span density ± ε
    audio: str = None  # regmean: folder of unlabelled audio for the Grams
    offdiag_scale: float = None  # regmean: off-diagonal Gram scaling
    max_seconds: float = None  # regmean: audio used at most
    source: dict = field(default_factory=dict)  # the config file's path, for provenance
    align_audio: str = None  # align each θ′ to θ0 on this audio before merging (merge/align.py)
    align_points: tuple = ("cnn", "ffn", "attn")
    repair_audio: str = None  # REPAIR the merged model's statistics on this audio (merge/repair.py)
    align_max_seconds: float = None


def _fail(origin, message):
    raise SpeechFTError(f"{origin}: {message}")


def read_yaml(path):
    import yaml

    path = Path(path)
    if not path.is_file():
        _fail(path, "merge config not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        _fail(path, f"not valid YAML ({str(err).splitlines()[0]})")
    if not isinstance(data, dict):
        _fail(path, f"merge config must be a YAML mapping, got {type(data).__name__}")
    known = set(OURS) | set(AUTHORS)
    for key in data:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(sorted(known))}"
            _fail(path, f"unknown key {key!r}{hint}")
    values = {}
    for key, value in data.items():
        target = AUTHORS.get(key, key) if key not in OURS else key
        if target is None:
            continue  # finetune_model_names only labels the authors' logs
        if target in values and values[target] != value:
            _fail(path, f"{key!r} and another key both set {target!r}, to different values")
        values[target] = value
    if values.get("base") == "":
        del values["base"]  # the authors' way of saying "the default checkpoint"
    return values


def _floats(origin, name, value, allow_list=True):
    items = value if isinstance(value, (list, tuple)) else str(value).split(",") if allow_list else [value]
    out = []
    for item in items:
        try:
            number = float(item)
        except (TypeError, ValueError):
            _fail(origin, f"{name}: {item!r} is not a number")
        if not math.isfinite(number):
            _fail(origin, f"{name}: {item!r} is not a finite number")
        out.append(number)
    if not out:
        _fail(origin, f"{name}: no value given")
    return out


def _layer_alpha(origin, value):
    if value is None:
        return None
    if isinstance(value, dict):
        if set(value) != {"start", "end"}:
            _fail(origin, "layer_alpha: a schedule needs exactly the keys 'start' and 'end'")
        return ("linear", *_floats(origin, "layer_alpha", [value["start"], value["end"]]))
    if isinstance(value, str) and ":" in value:
        parts = value.split(":")
        if len(parts) != 2:
            _fail(origin, f"layer_alpha: {value!r} is not START:END")
        return ("linear", *_floats(origin, "layer_alpha", parts))
    return _floats(origin, "layer_alpha", value)


def _output_paths(origin, output, output_dir, alphas):
    if output is None and output_dir is None:
        _fail(origin, "no output: give -o OUT.pt (or output / output_dir in the config)")
    path = Path(output) if output is not None else Path(output_dir) / "merged_model.pt"
    if len(alphas) == 1:
        return [path.with_name(path.name.format(alpha=f"{alphas[0]:g}")) if "{alpha}" in path.name else path]
    if "{alpha}" in path.name:
        return [path.with_name(path.name.format(alpha=f"{a:g}")) for a in alphas]
    return [path.with_name(f"{path.stem}_alpha{a:g}{path.suffix}") for a in alphas]


def _fraction(origin, values, key, method, owner, default, upper_open=False):
    """A method option in [0, 1) (or [0, 1]): refused for other methods, defaulted for its own."""
    value = values.get(key)
    if value is None:
        return default if method == owner else None
    if method != owner:
        _fail(origin, f"{key} applies to {owner}, not {method}")
    number = _floats(origin, key, value, allow_list=False)[0]
    if not (0.0 <= number < 1.0 if upper_open else 0.0 <= number <= 1.0):
        _fail(origin, f"{key} = {number:g} is outside [0, 1{')' if upper_open else ']'}")
    return number


def _regmean_options(origin, values, method):
    """(audio folder, off-diagonal scale, max seconds) for regmean; None for other methods."""
    from speechft_upstream.merge.methods_regmean import DEFAULT_SCALE

    given = [k for k in ("audio", "offdiag_scale", "max_seconds") if values.get(k) is not None]
    if method != "regmean":
        if given:
            _fail(origin, f"{given[0]} applies to regmean, not {method}")
        return None, None, None
    audio = values.get("audio")
    if audio is None:
        _fail(origin, "regmean needs unlabelled audio for its Gram matrices: give --audio DIR")
    if not Path(audio).is_dir():
        _fail(audio, "audio folder not found")
    scale = _fraction(origin, values, "offdiag_scale", method, "regmean", DEFAULT_SCALE)
    max_seconds = values.get("max_seconds")
    if max_seconds is not None:
        max_seconds = _floats(origin, "max_seconds", max_seconds, allow_list=False)[0]
        if max_seconds <= 0:
            _fail(origin, f"max_seconds = {max_seconds:g} must be positive")
    return str(audio), scale, max_seconds


def build(options, config=None):
    """A validated MergeSpec from command-line ``options`` (None = not given) and a config file."""
    values = read_yaml(config) if config else {}
    values.update({k: v for k, v in options.items() if v is not None and v is not False})
    origin = config if config else "merge"

    method = values.get("method", "linear")
    if method not in METHODS:
        _fail(origin, f"unknown merge method {method!r} (choose from {', '.join(METHODS)})")
    finetuned = values.get("finetuned")
    if isinstance(finetuned, (str, Path)):
        finetuned = [finetuned]
    if not finetuned:
        _fail(origin, "no fine-tuned checkpoint: give --finetuned THETA_PRIME (or finetune_model_paths)")
    finetuned = [str(p) for p in finetuned]
    if "alpha" not in values:
        _fail(origin, "no α: give --alpha (e.g. 0.25, or 0.1,0.25,0.5 for one file each)")
    alphas = _floats(origin, "alpha", values["alpha"])
    if len(set(alphas)) != len(alphas):
        _fail(origin, f"alpha: values repeat ({values['alpha']})")
    extrapolate = bool(values.get("extrapolate", False))
    layer_alpha = _layer_alpha(origin, values.get("layer_alpha"))
    if layer_alpha is not None and len(alphas) > 1:
        _fail(origin, "per-layer α takes a single --alpha (used outside the transformer layers)")
    checked = alphas + (list(layer_alpha[1:]) if isinstance(layer_alpha, tuple) else layer_alpha or [])
    for a in checked:
        if not 0.0 <= a <= 1.0 and not extrapolate:
            _fail(origin, f"α = {a:g} is outside [0, 1]; pass --extrapolate to allow it")

    if method == "slerp" and len(finetuned) != 1:
        _fail(origin, f"slerp interpolates θ0 and one θ′; {len(finetuned)} fine-tuned checkpoints given")
    if method == "model_stock" and len(finetuned) < 2:
        _fail(origin, "model_stock needs at least two fine-tuned checkpoints (it uses the angle between them)")
    weights = values.get("weights")
    if weights is not None:
        if method not in WEIGHTED:
            _fail(origin, f"weights apply to {', '.join(WEIGHTED)}, not {method}")
        weights = _floats(origin, "weights", weights)
        if len(weights) != len(finetuned):
            _fail(origin, f"{len(weights)} weights for {len(finetuned)} fine-tuned checkpoints")
        if method in ("linear", "dare", "breadcrumbs") and sum(weights) == 0:
            _fail(origin, f"weights sum to 0, which {method} divides by")
    density = values.get("density")
    if density is not None:
        if method not in DEFAULT_DENSITY:
            _fail(origin, f"density applies to {', '.join(DEFAULT_DENSITY)}, not {method}")
        density = _floats(origin, "density", density, allow_list=False)[0]
        if not 0.0 < density <= 1.0:
            _fail(origin, f"density = {density:g} is outside (0, 1]")
    elif method in DEFAULT_DENSITY:
        density = DEFAULT_DENSITY[method]
    gamma = _fraction(origin, values, "gamma", method, "breadcrumbs", DEFAULT_GAMMA, upper_open=True)
    epsilon = _fraction(origin, values, "epsilon", method, "della", DEFAULT_EPSILON, upper_open=True)
    if method == "della" and not (0 < density - epsilon and density + epsilon <= 1):
        _fail(origin, f"della: density ± epsilon ({density:g} ± {epsilon:g}) must lie in (0, 1]")
    audio, offdiag_scale, max_seconds = _regmean_options(origin, values, method)
    seed = values.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) and not str(seed).lstrip("-").isdigit():
        _fail(origin, f"seed: {seed!r} is not an integer")

    family, base = values.get("family"), values.get("base")
    if family is not None:
        if family not in AUTHOR_MODELS:
            _fail(origin, f"base_model_name {family!r} is not one of {', '.join(AUTHOR_MODELS)}")
        family, default_url = AUTHOR_MODELS[family]
        if base is None:
            if default_url is None:
                _fail(origin, f"no default checkpoint for {family!r}: set base_model_ckpt_path")
            base = default_url
    if base is None:
        _fail(origin, "no base checkpoint: give --base THETA0 (or base_model_ckpt_path)")

    outputs = _output_paths(origin, values.get("output"), values.get("output_dir"), alphas)
    inputs = {Path(p).resolve() for p in [base, *finetuned] if "://" not in str(p)}
    force = bool(values.get("force", False))
    for out in outputs:
        if out.resolve() in inputs:
            _fail(out, "is also an input; write the merge to another file")
        if out.is_dir():
            _fail(out, "is a directory; give a file name for the merged checkpoint")
        if out.exists() and not force:
            _fail(out, "already exists (use --force to replace it)")
    register = values.get("register")
    if register is not None and (not str(register).isidentifier()):
        _fail(origin, f"register: {register!r} is not a valid upstream name (use letters, digits and _)")
    align_audio, repair_audio = values.get("align_audio"), values.get("repair_audio")
    from speechft_upstream.merge.align import DEFAULT_POINTS, parse_points

    points = parse_points(values["align_points"], f"{origin}: align_points") if values.get("align_points") else DEFAULT_POINTS
    for key, folder in (("align_audio", align_audio), ("repair_audio", repair_audio)):
        if folder is not None and not Path(folder).is_dir():
            _fail(folder, f"no such folder ({key.replace('_', '-')} takes the folder that holds the audio)")
    if repair_audio is not None and (method != "linear" or layer_alpha is not None):
        _fail(origin, "REPAIR interpolates the endpoints' statistics: it needs --method linear and one global α")
    align_seconds = values.get("align_max_seconds")
    if align_seconds is not None:
        align_seconds = _floats(origin, "align_max_seconds", align_seconds, allow_list=False)[0]
        if align_seconds <= 0:
            _fail(origin, f"align_max_seconds = {align_seconds:g} is not a positive number of seconds")
    return MergeSpec(base=str(base), finetuned=finetuned, alphas=alphas, outputs=outputs, method=method,
                     weights=weights, density=density, seed=int(seed), layer_alpha=layer_alpha,
                     extrapolate=extrapolate, force=force, register=register, family=family,
                     gamma=gamma, epsilon=epsilon, audio=audio, offdiag_scale=offdiag_scale,
                     max_seconds=max_seconds, source={"config": str(Path(config).resolve())} if config else {},
                     align_audio=str(align_audio) if align_audio else None, align_points=points,
                     repair_audio=str(repair_audio) if repair_audio else None, align_max_seconds=align_seconds)


def resolve_layer_alphas(spec, n_layers, origin):
    """The per-layer α list for a model with ``n_layers`` transformer layers (None if not asked)."""
    from speechft_upstream.merge.methods import linear_schedule

    if spec.layer_alpha is None:
        return None
    if n_layers == 0:
        _fail(origin, "per-layer α given, but the checkpoint has no encoder.layers.<i> tensors")
    if isinstance(spec.layer_alpha, tuple):
        return linear_schedule(spec.layer_alpha[1], spec.layer_alpha[2], n_layers)
    if len(spec.layer_alpha) != n_layers:
        _fail(origin, f"{len(spec.layer_alpha)} per-layer α values for a model with {n_layers} layers")
    return list(spec.layer_alpha)
