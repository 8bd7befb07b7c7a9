"""The mini-SUPERB θ0 recipe: HuBERT's two iterations on a `speechft corpus`, and the codeword check.

Iteration 1 is `speechft pretrain`'s masked prediction of MFCC k-means ids; iteration 2
re-clusters θ0's own features (an intermediate transformer layer, unmasked, eval mode) and goes
on training the same weights against the new ids, with a fresh codebook. Both iterations also
weigh the unmasked frames (fairseq's ``pred_nomask_weight``), so the codeword head is trained on
the unmasked input that the paper's unsupervised fine-tuning reads its targets from.
"""

import sys

from speechft_upstream.errors import SpeechFTError


def train_steps(model, waves, labels, steps, lr, batch_seconds, max_seconds, need, rng, nomask_weight,
                progress, record, desc="pretrain"):
    """``steps`` AdamW steps (linear warm-up then decay) on aligned random crops; appends to record."""
    import torch
    from tqdm import tqdm

    from speechft_upstream.pretrain.data import make_batch
    from speechft_upstream.pretrain.train import FEATURE_PEN, WARMUP, forward_loss

    order = sorted(range(len(waves)), key=lambda i: (len(waves[i]), i))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
    warm = max(1, int(WARMUP * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    bar = tqdm(range(1, steps + 1), desc=desc, unit="step", disable=not progress, file=sys.stderr)
    smooth = None
    for step in bar:
        wav, goals = make_batch(rng, waves, labels, order, batch_seconds, max_seconds, need)
        loss, pen, correct, n = forward_loss(model, wav, goals, nomask_weight=nomask_weight)
        if not torch.isfinite(loss):
            raise SpeechFTError(f"loss became {loss.item()} at step {step} ({desc}); nothing written")
        optimizer.zero_grad(set_to_none=True)
        (loss + FEATURE_PEN * pen).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        record["loss"].append(round(loss.item(), 5))
        record["accuracy"].append(round(correct / max(n, 1), 5))
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        bar.set_postfix(loss=f"{smooth:.3f}", acc=f"{correct / max(n, 1):.3f}")
        if progress and not sys.stderr.isatty() and (step % max(1, steps // 10) == 0 or step == steps):
            print(f"[speechft] {desc} step {step}/{steps}: loss {smooth:.4f}", file=sys.stderr, flush=True)
    bar.close()


def _frames(model, wave, layer):
    """(T, D) unmasked features of one int16 wave: transformer layer ``layer`` (1-based), or the
    last layer's ``final_proj`` when layer is None."""
    import numpy as np
    import torch

    from speechft_upstream.finetune.unsupervised import encode

    wav = torch.from_numpy(wave.astype(np.float32) / 32768.0)[None]
    features = model.feature_extractor(wav).transpose(1, 2)
    if layer is None:
        return encode(model, features, mask=False)[0][0]
    x = model.layer_norm(features)
    if model.post_extract_proj is not None:
        x = model.post_extract_proj(x)
    return model.encoder(x, padding_mask=None, layer=layer - 1)[0][0]


def layer_features(model, waves, layer, progress=False):
    """Transformer layer ``layer``'s unmasked features per wave, in eval mode."""
    import torch
    from tqdm import tqdm

    model.eval()
    with torch.no_grad():
        feats = [_frames(model, w, layer).numpy() for w in tqdm(waves, desc=f"layer {layer}", unit="utt",
                                                                 disable=not progress, file=sys.stderr)]
    model.train()
    return feats


def layer_labels(model, waves, layer, clusters, seed, max_frames, progress):
    """HuBERT's second-iteration targets: k-means ids of transformer layer ``layer``'s features."""
    from speechft_upstream.pretrain.data import fit_kmeans

    feats = layer_features(model, waves, layer, progress)
    labels, counts, km, stats = fit_kmeans(feats, clusters, seed, max_frames)
    return labels, {"layer": layer, **stats, "label_perplexity": perplexity(counts)}, km


def perplexity(counts):
    import numpy as np

    p = np.asarray(counts, dtype=np.float64)
    p = p[p > 0] / p.sum()
    return round(float(np.exp(-(p * np.log(p)).sum())), 2)


def new_codebook(model, clusters, seed):
    """A fresh ``label_embs_concat`` of 4 specials + ``clusters`` rows (HuBERT's init: N(0, 1))."""
    import torch

    from speechft_upstream.pretrain.train import SPECIALS

    gen = torch.Generator().manual_seed(seed + 7)
    rows = torch.empty(len(SPECIALS) + clusters, model.label_embs_concat.shape[1]).normal_(0.0, 1.0, generator=gen)
    model.label_embs_concat = torch.nn.Parameter(rows)
    model.num_classes = [len(SPECIALS) + clusters]
    return [SPECIALS + [str(i) for i in range(clusters)]]


def codeword_usage(model, symbols, waves):
    """The codeword head on unmasked audio, as unsupervised fine-tuning reads its targets:
    argmax of cosine(final_proj(x), codewords) over non-special codewords, per 50 Hz frame."""
    import numpy as np
    import torch

    from speechft_upstream.finetune.unsupervised import codeword_logits, special_masks

    model.eval()
    specials = special_masks(symbols, "cpu")[0]
    counts = np.zeros(len(symbols[0]), dtype=np.int64)
    with torch.no_grad():
        for w in waves:
            logits = codeword_logits(model, _frames(model, w, None))[0].masked_fill(specials, float("-inf"))
            counts += np.bincount(logits.argmax(-1).numpy(), minlength=len(counts))
    model.train()
    return {"frames": int(counts.sum()), "used_codewords": int((counts > 0).sum()),
            "perplexity": perplexity(counts), "largest_share": round(float(counts.max() / max(1, counts.sum())), 4)}
