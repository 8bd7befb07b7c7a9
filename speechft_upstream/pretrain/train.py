"""`speechft pretrain`: a small HuBERT θ0 pre-trained on a `speechft corpus` (recipe ``mini-superb``).

1. Training audio: every ``split == "train"`` utterance listed in the corpus's ``corpus.json``.
2. Iteration 1 targets: MFCC (``torchaudio.compliance.kaldi.mfcc``, 13 coefficients, no energy,
   as fairseq's ``dump_mfcc_feature.py``) + deltas + delta-deltas at 100 Hz, every second frame
   kept (the model's 50 Hz label rate; frame ``j`` covers samples ``[320 j, 320 j + 400)`` in
   both), then ``MiniBatchKMeans`` (seeded) with K clusters → one cluster id per 50 Hz frame.
3. Masked prediction with s3prl's own ``HubertModel`` (span masking through its ``apply_mask``,
   HuBERT's cosine codeword logits from :mod:`speechft_upstream.finetune.unsupervised`):
   cross-entropy on masked frames, plus ``nomask_weight`` × the unmasked frames' (fairseq's
   ``pred_nomask_weight``), plus HuBERT's feature penalty. The CNN trains too (gradient scaled by
   0.1, as in HuBERT). AdamW, linear warm-up then decay.
4. Iteration 2 (:mod:`.recipe`): k-means of the model's own transformer layer ``iter2_layer``
   (unmasked), a fresh codebook, and the same training on from the iteration-1 weights.

θ0 is written atomically in s3prl's converted HuBERT format (``dictionaries_symbols`` = 4 fairseq
specials + K cluster ids, so ``label_embs_concat`` has K + 4 rows) and loads with stock
``hubert_local``. Beside it, ``THETA0.pt.json`` records the corpus fingerprint (sha256 of
corpus.json), the settings, the loss curve, a held-out masked accuracy and the codeword head's
usage on held-out audio; an identical second call reuses the file, a call with other settings is
refused unless ``--force``.

Runs single-threaded (torch and k-means): bit-exact for a seed, and on a shared 2-core machine
two torch threads made each step 5–10× more expensive in CPU time than one.
"""

import json
import sys
import time
from pathlib import Path

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.pretrain.data import kmeans_labels, load_audio, make_batch, mfcc_50hz, read_corpus, sha256_of

FORMAT = 2  # bump when the recipe changes: cached θ0 files made by another recipe are not reused
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
ARCH = dict(
    conv_feature_layers="[(64,10,5)] + [(64,3,2)] * 4 + [(64,2,2)] * 2",
    encoder_layers=4, encoder_embed_dim=144, encoder_ffn_embed_dim=576, encoder_attention_heads=4,
    conv_pos=32, conv_pos_groups=8, final_dim=64, extractor_mode="default",
    dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, encoder_layerdrop=0.0,
    dropout_input=0.1, dropout_features=0.1, mask_prob=0.8, mask_length=10, label_rate=50.0,
)
# The benchmark's θ0 (shipped as assets/theta0_mini_superb.pt, see pretrain/shipped.py).
# --quick: the same recipe with a quarter of the steps, for trying it out; not the shipped θ0.
RECIPES = {
    "mini-superb": dict(steps=1500, clusters=100, iter2_steps=1000, iter2_layer=3, iter2_clusters=100,
                        nomask_weight=0.5, lr=1e-3, batch_seconds=24.0, max_seconds=4.0, kmeans_frames=200000),
}
FEATURE_GRAD_MULT = 0.1
FEATURE_PEN = 10.0
WARMUP = 0.08


def sidecar_path(output):
    output = Path(output)
    return output.with_name(output.name + ".json")


def build_model(clusters, seed):
    import torch
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
    model_cfg = dict(ARCH)
    symbols = [SPECIALS + [str(i) for i in range(clusters)]]
    torch.manual_seed(seed)
    model = HubertModel(merge_with_parent(HubertConfig, model_cfg),
                        merge_with_parent(HubertPretrainingConfig, task_cfg), symbols)
    return model, task_cfg, model_cfg, symbols


def forward_loss(model, wav, goals, train=True, nomask_weight=0.0):
    """Masked-prediction loss (+ ``nomask_weight`` × the unmasked frames' loss, fairseq's
    ``pred_nomask_weight``), feature penalty, correct / masked frame counts."""
    import torch
    from s3prl.upstream.wav2vec2.wav2vec2_model import GradMultiply

    from speechft_upstream.finetune.unsupervised import codeword_logits, encode

    features = model.feature_extractor(wav)
    if train and FEATURE_GRAD_MULT != 1.0:
        features = GradMultiply.apply(features, FEATURE_GRAD_MULT)
    n = min(features.shape[-1], goals.shape[1])
    features = features[..., :n].transpose(1, 2)
    goals = goals[:, :n] + len(SPECIALS)
    pen = features.float().pow(2).mean()
    hidden, mask = encode(model, features, mask=True)
    logits = codeword_logits(model, hidden[mask])[0]
    target = goals[mask]
    loss = torch.nn.functional.cross_entropy(logits, target)
    if nomask_weight and bool((~mask).any()):
        loss = loss + nomask_weight * torch.nn.functional.cross_entropy(codeword_logits(model, hidden[~mask])[0],
                                                                         goals[~mask])
    correct = int((logits.detach().argmax(-1) == target).sum())
    return loss, pen, correct, int(mask.sum())


def evaluate(model, waves, labels, seed, min_samples):
    """Masked accuracy and loss on held-out utterances (fixed masks), in eval mode."""
    import numpy as np
    import torch

    model.eval()
    state = np.random.get_state()
    np.random.seed(seed + 1)
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for w, lab in zip(waves, labels):
            wav = torch.from_numpy(w.astype(np.float32) / 32768.0)[None]
            loss, _, c, n = forward_loss(model, wav, torch.from_numpy(lab)[None], train=False)
            total, correct, loss_sum = total + n, correct + c, loss_sum + loss.item() * n
    np.random.set_state(state)
    model.train()
    return {"dev_masked_accuracy": round(correct / max(total, 1), 4), "dev_loss": round(loss_sum / max(total, 1), 4),
            "dev_masked_frames": total, "dev_utterances": len(waves)}


def _settings(recipe, steps, clusters, iter2_steps, seed, quick):
    if recipe not in RECIPES:
        raise SpeechFTError(f"--recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    preset = dict(RECIPES[recipe])
    if quick:
        preset["steps"], preset["iter2_steps"] = preset["steps"] // 4, preset["iter2_steps"] // 4
    for key, value in (("steps", steps), ("clusters", clusters), ("iter2_steps", iter2_steps)):
        if value is not None:
            preset[key] = value
    if clusters is not None:
        preset["iter2_clusters"] = clusters
    if not isinstance(preset["steps"], int) or preset["steps"] < 1:
        raise SpeechFTError(f"--steps must be a positive integer, got {preset['steps']!r}")
    if not isinstance(preset["iter2_steps"], int) or preset["iter2_steps"] < 0:
        raise SpeechFTError(f"--iter2-steps must be an integer of at least 0, got {preset['iter2_steps']!r}")
    if not isinstance(preset["clusters"], int) or preset["clusters"] < 2:
        raise SpeechFTError(f"--clusters must be an integer of at least 2, got {preset['clusters']!r}")
    return dict(format=FORMAT, recipe=recipe, quick=bool(quick), seed=seed, arch=ARCH, **preset)


def _cached(output, fingerprint, settings):
    """True when output is a finished θ0 made from this corpus with these settings; refuses other files."""
    side = sidecar_path(output)
    if not output.exists():
        return False
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError):
        raise SpeechFTError(f"{output}: already exists and was not made by `speechft pretrain` (no readable "
                            f"{side.name}); use --force to replace it") from None
    if record.get("corpus_sha256") != fingerprint:
        raise SpeechFTError(f"{output}: was pre-trained on another corpus (corpus.json differs); use --force to replace it")
    if record.get("settings") != settings:
        old = record.get("settings") or {}
        diff = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v and k != "arch")
        raise SpeechFTError(f"{output}: was pre-trained with other settings ({diff or 'model or recipe changed'}); "
                            "use --force to replace it")
    if record.get("sha256") != sha256_of(output):
        raise SpeechFTError(f"{output}: changed since it was written (sha256 differs from {side.name}); use --force to replace it")
    return True


def run(corpus, output, steps=None, clusters=None, seed=0, quick=False, force=False, progress=True,
        recipe="mini-superb", iter2_steps=None, keep_iteration1=False):
    """Pre-train θ0 on ``corpus``, write it to ``output``; returns (record, reused).

    ``keep_iteration1``: also write the weights after iteration 1 (``<output stem>.iteration1.pt``,
    bit-identical to a run with ``iter2_steps=0``), to compare the two iterations."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    from speechft_upstream.finetune.unsupervised import min_samples as shortest
    from speechft_upstream.pretrain.recipe import (codeword_usage, layer_features, layer_labels, new_codebook,
                                                   train_steps)

    output = Path(output)
    if output.is_dir():
        raise SpeechFTError(f"{output}: is a directory, expected an output file name")
    settings = _settings(recipe, steps, clusters, iter2_steps, seed, quick)
    manifest, fingerprint, train, dev = read_corpus(corpus)
    if not force and _cached(output, fingerprint, settings):
        return json.loads(sidecar_path(output).read_text()), True

    started = time.time()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)  # s3prl's compute_mask_indices draws from numpy's global generator
    rng = np.random.default_rng(seed)
    model, task_cfg, model_cfg, symbols = build_model(settings["clusters"], seed)
    need = shortest(model)
    waves = load_audio(corpus, train, need)
    if not waves:
        raise SpeechFTError(f"{corpus}: no training utterance is long enough ({need / 16000:.2f} s) for HuBERT masking")
    dev_waves = load_audio(corpus, dev[:: max(1, len(dev) // 64)][:64], need)
    seconds = sum(len(w) for w in waves) / 16000
    print(f"[speechft] pretrain ({recipe}): {len(waves)} training utterances ({seconds / 60:.1f} min) from "
          f"{corpus}; iteration 1: {settings['clusters']} MFCC k-means clusters, {settings['steps']} steps; "
          f"iteration 2: {settings['iter2_steps']} steps; {sum(p.numel() for p in model.parameters()):,} parameters",
          file=sys.stderr)
    with threadpool_limits(1):
        labels, km_stats, km = kmeans_labels(waves, settings["clusters"], seed, settings["kmeans_frames"], progress)
    dev_labels = [km.predict(mfcc_50hz(w)).astype(np.int64) for w in dev_waves]
    km_stats["seconds"] = round(time.time() - started, 1)
    print(f"[speechft] k-means targets: {km_stats}", file=sys.stderr)
    record = {"corpus": str(corpus), "corpus_sha256": fingerprint, "settings": settings, "kmeans": km_stats,
              "training_utterances": len(waves), "training_minutes": round(seconds / 60, 2),
              "loss": [], "accuracy": []}
    args = (settings["lr"], settings["batch_seconds"], settings["max_seconds"], need, rng, settings["nomask_weight"],
            progress, record)
    train_steps(model, waves, labels, settings["steps"], *args, desc="iteration 1")
    if settings["iter2_steps"] and keep_iteration1:
        first = output.with_name(output.stem + ".iteration1.pt")
        weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        files.save_atomic({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": weights,
                           "dictionaries_symbols": symbols}, first)
        record["iteration1"] = {"path": str(first), "sha256": sha256_of(first),
                                "codewords": codeword_usage(model, symbols, dev_waves) if dev_waves else None}
        print(f"[speechft] iteration 1 written to {first}: {record['iteration1']}", file=sys.stderr, flush=True)
    if settings["iter2_steps"]:
        t = time.time()
        with threadpool_limits(1):
            labels, stats, km = layer_labels(model, waves, settings["iter2_layer"], settings["iter2_clusters"],
                                             seed, settings["kmeans_frames"], progress)
        dev_labels = [km.predict(f).astype(np.int64) for f in layer_features(model, dev_waves, settings["iter2_layer"])]
        record["kmeans_iteration2"] = dict(stats, seconds=round(time.time() - t, 1))
        print(f"[speechft] iteration 2 targets: {record['kmeans_iteration2']}", file=sys.stderr)
        symbols = new_codebook(model, settings["iter2_clusters"], seed)
        train_steps(model, waves, labels, settings["iter2_steps"], *args, desc="iteration 2")
    record["train_seconds"] = round(time.time() - started - km_stats["seconds"], 1)
    if dev_waves:
        record.update(evaluate(model, dev_waves, dev_labels, seed, need))
        record["codewords"] = codeword_usage(model, symbols, dev_waves)

    weights = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state = {"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": weights, "dictionaries_symbols": symbols}
    files.save_atomic(state, output)
    total = len(record["loss"])
    tail = record["loss"][-max(1, min(50, total // 5)):]
    record["first_loss"] = record["loss"][0]
    record["final_loss"] = round(sum(tail) / len(tail), 4)
    tail = record["accuracy"][-len(tail):]
    record["final_accuracy"] = round(sum(tail) / len(tail), 4)
    record["seconds_elapsed"] = round(time.time() - started, 1)
    record["threads"] = torch.get_num_threads()
    record["sha256"] = sha256_of(output)
    files.write_json_atomic(record, sidecar_path(output), indent=1)
    return record, False


def add_parser(sub):
    """The ``speechft pretrain`` subcommand."""
    p = sub.add_parser("pretrain", help="pre-train a small HuBERT θ0 on a speechft corpus (MFCC k-means targets)",
                       description="HuBERT's first iteration on the corpus's training audio: MFCC k-means "
                                   "targets, masked prediction with s3prl's HubertModel. Writes θ0 in s3prl's "
                                   "converted format and THETA0.pt.json beside it; an identical second call "
                                   "reuses the file.")
    p.add_argument("--corpus", required=True, metavar="DIR", help="folder written by `speechft corpus` (or `speechft corpus --music`: its train clips)")
    p.add_argument("-o", "--output", required=True, metavar="THETA0.pt")
    p.add_argument("--recipe", default="mini-superb", choices=sorted(RECIPES),
                   help="the settings (default mini-superb: the benchmark's shipped θ0)")
    p.add_argument("--steps", type=int, help=f"iteration-1 optimizer steps (default {RECIPES['mini-superb']['steps']})")
    p.add_argument("--iter2-steps", type=int, help="iteration-2 steps, 0 for none "
                                                   f"(default {RECIPES['mini-superb']['iter2_steps']})")
    p.add_argument("--clusters", type=int, help=f"k-means clusters K of both iterations "
                                                f"(default {RECIPES['mini-superb']['clusters']})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a quarter of the recipe's steps (to try it out; the "
                                                        "benchmark uses the full recipe's θ0 at every size)")
    p.add_argument("--force", action="store_true", help="replace an existing output made with other settings")
    p.add_argument("--keep-iteration1", action="store_true", help="also write the weights after iteration 1 "
                                                                 "(OUTPUT stem + .iteration1.pt)")
    p.set_defaults(func=_command)


def _command(args):
    record, reused = run(args.corpus, args.output, steps=args.steps, clusters=args.clusters, seed=args.seed,
                         quick=args.quick, force=args.force, recipe=args.recipe, iter2_steps=args.iter2_steps,
                         keep_iteration1=args.keep_iteration1)
    what = "reusing" if reused else "wrote"
    print(f"{what} {args.output} (pre-trained θ0: {record['settings']['steps']} + "
          f"{record['settings']['iter2_steps']} steps, loss "
          f"{record['first_loss']:.3f} -> {record['final_loss']:.3f}, masked accuracy {record['final_accuracy']:.3f}"
          + (f", dev {record['dev_masked_accuracy']:.3f}" if "dev_masked_accuracy" in record else "")
          + f"; {sidecar_path(args.output).name} beside it)")
