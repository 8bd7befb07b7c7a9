"""Unsupervised fine-tuning of a HuBERT θ0 on unlabelled audio (the paper's continued pre-training).

The simplified HuBERT loss, with no k-means and no learnable codebook:

- Codeword logits are HuBERT's own: cosine similarity between ``final_proj`` of the last
  transformer layer and each row of ``label_embs_concat``, divided by ``logit_temp``.
- Targets: each step, the model being trained (its current weights, in eval mode, no gradient)
  encodes the *unmasked* batch; the target of a frame is the argmax of its codeword logits. The
  fairseq dictionary's special symbols (``<s>``, ``<pad>``, ``</s>``, ``<unk>``) were never
  targets in pre-training and are excluded from the argmax (they stay in the softmax, as in
  HuBERT). ``targets="theta0"`` takes them from a frozen copy of θ0 instead.
- Loss: cross-entropy over all codewords on the masked frames of a second, masked forward
  (HuBERT span masking: ``mask_prob`` and ``mask_length`` from the model's config), summed over
  label sets when the model has several.
- Frozen: the CNN feature extractor (run under ``no_grad``), ``final_proj``,
  ``label_embs_concat`` (and ``target_glu`` if present): they are bit-identical in θ′, which is
  checked before saving. Everything else trains (Adam, the paper's LR schedule: 10% warm-up,
  40% hold, 50% linear decay; gradient norm clipped at 10).

θ′ is written in θ0's converted format (same configs and keys, new ``model_weight``), and the
per-step loss beside it as ``<output stem>.loss.json``.
"""

import math
import os
import sys
import time
from pathlib import Path

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.finetune.audio_data import SAMPLE_RATE, AudioFolder

SPECIAL_SYMBOLS = frozenset(("<s>", "<pad>", "</s>", "<unk>"))
FROZEN_PREFIXES = ("feature_extractor.", "final_proj.", "label_embs_concat", "target_glu.")
TARGET_SOURCES = ("current", "theta0")
CLIP_NORM = 10.0
DEFAULT_MIN_CODEWORDS = 4
PROBE_BATCHES = 3  # batches whose targets are checked before training starts


def build_model(path):
    """θ0 as s3prl's HubertModel, and the loaded converted-format dict."""
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    state, _ = files.read_encoder(path, expect="hubert")
    symbols = state["dictionaries_symbols"]
    if not symbols or any(d is None for d in symbols) or "label_embs_concat" not in state["model_weight"]:
        raise SpeechFTError(f"{path}: has no HuBERT codebook (label_embs_concat / dictionaries); "
                            "unsupervised fine-tuning needs a pre-trained HuBERT, not an ASR-fine-tuned one")
    try:
        model = HubertModel(merge_with_parent(HubertConfig, dict(state["model_cfg"])),
                            merge_with_parent(HubertPretrainingConfig, dict(state["task_cfg"])), symbols)
        model.load_state_dict(state["model_weight"], strict=True)
    except Exception as err:
        raise SpeechFTError(f"{path}: cannot build a HuBERT model from it ({type(err).__name__}: "
                            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
    return model, state


def frozen(name):
    return name.startswith(FROZEN_PREFIXES)


def min_samples(model):
    """Shortest audio (samples) whose CNN output has enough frames for two mask spans."""
    import torch

    convs = [m for m in model.feature_extractor.modules() if isinstance(m, torch.nn.Conv1d)]
    length = 2 * model.mask_length + 1  # frames
    for conv in reversed(convs):
        length = (length - 1) * conv.stride[0] + conv.kernel_size[0]
    return length


def encode(model, features, mask):
    """The last transformer layer for CNN features (B, T, C); with mask, also the mask indices."""
    x = model.layer_norm(features)
    if model.post_extract_proj is not None:
        x = model.post_extract_proj(x)
    x = model.dropout_input(x)
    indices = None
    if mask:
        x, indices = model.apply_mask(x, None, None)
    x, _ = model.encoder(x, padding_mask=None)
    return x, indices


def codeword_logits(model, x):
    """One (N, C_i) logit matrix per label set: cosine(final_proj(x), codewords) / logit_temp."""
    import torch.nn.functional as F

    proj = model.final_proj(x)
    parts = proj.chunk(len(model.num_classes), dim=-1) if model.untie_final_proj else [proj] * len(model.num_classes)
    logits = []
    for part, codes in zip(parts, model.label_embs_concat.split(model.num_classes, 0)):
        if model.target_glu is not None:
            codes = model.target_glu(codes)
        sim = F.normalize(part.float(), dim=-1, eps=1e-8) @ F.normalize(codes.float(), dim=-1, eps=1e-8).t()
        logits.append(sim / model.logit_temp)
    return logits


def special_masks(symbols, device):
    import torch

    return [torch.tensor([s in SPECIAL_SYMBOLS for s in d], dtype=torch.bool, device=device) for d in symbols]


def _check_options(o):
    for key, low in (("steps", 1), ("batch_size", 1)):
        if not isinstance(o[key], int) or o[key] < low:
            raise SpeechFTError(f"--{key.replace('_', '-')} must be a positive integer, got {o[key]!r}")
    if not (o["lr"] > 0 and math.isfinite(o["lr"])):
        raise SpeechFTError(f"--lr must be a positive number, got {o['lr']!r}")
    if not (o["max_seconds"] > 0 and math.isfinite(o["max_seconds"])):
        raise SpeechFTError(f"--max-seconds must be a positive number, got {o['max_seconds']!r}")
    if o["mask_prob"] is not None and not 0 < o["mask_prob"] <= 1:
        raise SpeechFTError(f"--mask-prob must be in (0, 1], got {o['mask_prob']!r}")
    if o["targets"] not in TARGET_SOURCES:
        raise SpeechFTError(f"--targets must be one of {', '.join(TARGET_SOURCES)}, got {o['targets']!r}")
    if not isinstance(o["min_codewords"], int) or o["min_codewords"] < 1:
        raise SpeechFTError(f"--min-codewords must be a positive integer, got {o['min_codewords']!r}")
    if o["device"] not in ("cpu", "cuda") and not str(o["device"]).startswith("cuda:"):
        raise SpeechFTError(f"--device must be cpu or cuda, got {o['device']!r}")


def targets_of(teacher, model, wav, specials):
    """Each label set's target codeword per frame, from ``teacher`` on the unmasked batch."""
    import torch

    with torch.no_grad():
        features = model.feature_extractor(wav).transpose(1, 2)
        teacher.eval()
        hidden, _ = encode(teacher, features, mask=False)
        goals = [logit.masked_fill(special, float("-inf")).argmax(-1)
                 for logit, special in zip(codeword_logits(teacher, hidden), specials)]
    return features, goals


def codewords_used(goals):
    """Distinct target codewords (the fewest over label sets)."""
    return min(int(goal.unique().numel()) for goal in goals)


def check_targets(teacher, model, data, specials, o, max_samples, normalize, ckpt):
    """Refuse a θ0 whose targets collapse (e.g. every frame one codeword): training against them
    learns nothing. Batches drawn with their own generator, so training draws what it would have."""
    import numpy as np
    import torch

    rng = np.random.default_rng([o["seed"], 1])
    seen = None
    for _ in range(PROBE_BATCHES):
        wav = data.batch(rng, o["batch_size"], max_samples).to(o["device"])
        if normalize:
            wav = torch.nn.functional.layer_norm(wav, wav.shape[-1:])
        _, goals = targets_of(teacher, model, wav, specials)
        sets = [set(g.unique().tolist()) for g in goals]
        seen = sets if seen is None else [a | b for a, b in zip(seen, sets)]
    used = min(len(x) for x in seen)
    if used < o["min_codewords"]:
        raise SpeechFTError(
            f"{ckpt}: the targets of the first {PROBE_BATCHES} batches use {used} codeword"
            f"{'' if used == 1 else 's'} (fewer than --min-codewords {o['min_codewords']}); training against "
            f"them learns nothing: use a θ0 whose codeword head separates frames, or --targets "
            f"{'current' if o['targets'] == 'theta0' else 'theta0'}")
    return used


def log_path(output):
    output = Path(output)
    return output.with_name(output.stem + ".loss.json")


def run(ckpt, audio, output, steps=1000, lr=5e-5, batch_size=8, max_seconds=15.0, mask_prob=None, seed=0,
        device="cpu", targets="current", force=False, progress=True, min_codewords=DEFAULT_MIN_CODEWORDS):
    """Train θ0 at ``ckpt`` on the audio under ``audio``; write θ′ to ``output``. Returns the log dict."""
    import numpy as np
    import torch
    from tqdm import tqdm

    from speechft_upstream.finetune.schedules import get_stable_finetuning_schedule

    options = dict(steps=steps, lr=lr, batch_size=batch_size, max_seconds=max_seconds, mask_prob=mask_prob,
                   seed=seed, device=device, targets=targets, min_codewords=min_codewords)
    _check_options(options)
    output = Path(output)
    if output.exists() and not force:
        raise SpeechFTError(f"{output}: already exists (use --force to replace it)")
    if output.is_dir():
        raise SpeechFTError(f"{output}: is a directory, expected an output file name")
    if Path(ckpt).exists() and output.exists() and os.path.samefile(ckpt, output):
        raise SpeechFTError(f"{output}: is θ0 itself; write θ′ to another file")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpeechFTError(f"--device {device}: CUDA is not available here (use --device cpu)")

    model, state = build_model(ckpt)
    if mask_prob is not None:
        model.mask_prob = float(mask_prob)  # this run only: θ′ keeps θ0's model_cfg
    if model.mask_prob <= 0:
        raise SpeechFTError(f"{ckpt}: its mask_prob is {model.mask_prob}; give --mask-prob (e.g. 0.8)")
    data = AudioFolder(audio, min_samples(model))
    max_samples = max(int(max_seconds * SAMPLE_RATE), min_samples(model))
    normalize = bool(state["task_cfg"].get("normalize", False))

    torch.manual_seed(seed)
    np.random.seed(seed)  # s3prl's compute_mask_indices draws from numpy's global generator
    rng = np.random.default_rng(seed)
    model.to(device)
    theta0 = {k: v.detach().clone() for k, v in model.state_dict().items() if frozen(k)}
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(not frozen(name))
        if not frozen(name):
            trainable.append(param)
    teacher = model
    if targets == "theta0":
        teacher = build_model(ckpt)[0].to(device).eval().requires_grad_(False)  # weight_norm blocks deepcopy
    specials = special_masks(state["dictionaries_symbols"], device)
    probed = check_targets(teacher, model, data, specials, options, max_samples, normalize, ckpt)
    optimizer = torch.optim.Adam(trainable, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = get_stable_finetuning_schedule(optimizer, steps)

    print(f"[speechft] unsupervised fine-tuning: {len(data.files)} files ({data.seconds:.1f} s) from {audio}"
          + (f", {len(data.skipped)} too short, skipped" if data.skipped else "")
          + f"; mask_prob {model.mask_prob}, mask_length {model.mask_length}; targets from the {targets} model; "
          f"CNN, final_proj and codebook frozen; the first {PROBE_BATCHES} batches' targets use {probed} codewords",
          file=sys.stderr)
    record = {"ckpt": str(ckpt), "audio": str(audio), "output": str(output), "files": len(data.files),
              "seconds": round(data.seconds, 3), **options, "mask_prob": model.mask_prob,
              "mask_length": model.mask_length, "loss": [], "accuracy": [], "masked_frames": [], "target_codewords": [],
              "batch_codewords": [], "lr_per_step": []}
    collapsing = False
    started = time.time()
    bar = tqdm(range(1, steps + 1), desc="unsupervised", unit="step", disable=not progress, file=sys.stderr)
    for step in bar:
        wav = data.batch(rng, batch_size, max_samples).to(device)
        if normalize:
            wav = torch.nn.functional.layer_norm(wav, wav.shape[-1:])
        features, goals = targets_of(teacher, model, wav, specials)
        batch_codewords = codewords_used(goals)
        record["batch_codewords"].append(batch_codewords)
        if batch_codewords < min_codewords and not collapsing:
            bar.write(f"speechft: warning: step {step}: the targets use {batch_codewords} codeword"
                      f"{'' if batch_codewords == 1 else 's'}, fewer than --min-codewords {min_codewords}; "
                      "the codeword head may be collapsing", file=sys.stderr)
        collapsing = batch_codewords < min_codewords  # warn again only after a recovery
        model.train()
        hidden, mask = encode(model, features, mask=True)
        hidden = hidden[mask]
        loss, correct, used = 0.0, 0, 0
        for logit, goal in zip(codeword_logits(model, hidden), goals):
            goal = goal.view(mask.shape)[mask]
            loss = loss + torch.nn.functional.cross_entropy(logit, goal)
            correct += int((logit.detach().argmax(-1) == goal).sum())
            used += int(goal.unique().numel())
        if not torch.isfinite(loss):
            raise SpeechFTError(f"loss became {loss.item()} at step {step}; nothing written (try a lower --lr)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, CLIP_NORM)
        record["lr_per_step"].append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
        n = int(mask.sum())
        record["loss"].append(round(loss.item(), 6))
        record["accuracy"].append(round(correct / (n * len(goals)), 6))
        record["masked_frames"].append(n)
        record["target_codewords"].append(used)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    record["seconds_elapsed"] = round(time.time() - started, 2)

    weights = model.state_dict()
    for name, before in theta0.items():
        if not torch.equal(before, weights[name]):
            raise SpeechFTError(f"internal error: frozen weight {name} changed; nothing written")
    original = state["model_weight"]
    if set(weights) != set(original):
        raise SpeechFTError("internal error: trained model's weight names differ from θ0's; nothing written")
    out = dict(state)
    out["model_weight"] = {k: weights[k].detach().to("cpu", original[k].dtype).clone().contiguous() for k in original}
    files.save_atomic(out, output)
    _write_json(record, log_path(output))
    return record


def _write_json(obj, path):
    files.write_json_atomic(obj, path, indent=1)


def add_parser(sub):
    """The ``speechft unsupervised`` subcommand."""
    p = sub.add_parser("unsupervised", help="unsupervised fine-tuning of a HuBERT θ0 on a folder of audio → θ′",
                       description="Continued pre-training with the simplified HuBERT loss: cross-entropy on "
                                   "masked frames against the argmax of the model's own codeword logits; CNN, "
                                   "final_proj and codebook frozen. Writes θ′ in θ0's converted format and "
                                   "OUTPUT_STEM.loss.json beside it.")
    p.add_argument("--ckpt", required=True, metavar="THETA0", help="HuBERT checkpoint in s3prl's converted format")
    p.add_argument("--audio", required=True, metavar="DIR", help="folder of 16 kHz mono .wav/.flac (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="THETA_PRIME.pt")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default 5e-5)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--max-seconds", type=float, default=15.0, help="longest crop in seconds (default 15)")
    p.add_argument("--mask-prob", type=float, help="HuBERT mask_prob (default: the model's config)")
    p.add_argument("--targets", choices=TARGET_SOURCES, default="current",
                   help="model giving the targets: current (default, the model being trained) or theta0 (frozen θ0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--min-codewords", type=int, default=DEFAULT_MIN_CODEWORDS, metavar="N",
                   help=f"refuse to start when the first {PROBE_BATCHES} batches' targets use fewer than N "
                        f"codewords, warn when a batch's do (default {DEFAULT_MIN_CODEWORDS})")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.set_defaults(func=_command)


def _command(args):
    record = run(args.ckpt, args.audio, args.output, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
                 max_seconds=args.max_seconds, mask_prob=args.mask_prob, seed=args.seed, device=args.device,
                 targets=args.targets, force=args.force, min_codewords=args.min_codewords)
    loss = record["loss"]
    print(f"wrote {args.output} ({record['steps']} steps, loss {loss[0]:.4f} -> {loss[-1]:.4f}); "
          f"per-step log {log_path(args.output)}")
