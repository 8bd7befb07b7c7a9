"""The pre-training data: the corpus's training audio, MFCC k-means targets, aligned random crops.

Targets follow HuBERT's first iteration: MFCC (``torchaudio.compliance.kaldi.mfcc``, 13
coefficients, no energy, as fairseq's ``dump_mfcc_feature.py``) + deltas + delta-deltas at 100 Hz,
every second frame kept (the model's 50 Hz label rate), then a seeded ``MiniBatchKMeans``.
"""

import hashlib
import json
import sys
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

HOP = 320  # samples per 50 Hz frame (CNN stride); MFCC frames are 160 samples apart


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# The tasks whose audio θ0 learns from: those the corpus had when the shipped θ0 was trained.
# Tasks added to the corpus later (SF, SD, QbE) stay out, so the recipe still rebuilds that file.
PRETRAIN_TASKS = ("asr", "sid", "ks", "ic", "er")


def read_corpus(corpus):
    """The corpus.json manifest, its sha256, and the training utterances."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise SpeechFTError(f"{corpus}: no such corpus folder (make one with `speechft corpus --out {corpus}`)")
    manifest_path = corpus / "corpus.json"
    if not manifest_path.is_file() and (corpus / "music.json").is_file():
        return read_music(corpus)
    if not manifest_path.is_file():
        raise SpeechFTError(f"{corpus}: no corpus.json in it (make the corpus with `speechft corpus --out {corpus}`)")
    try:
        manifest = json.loads(manifest_path.read_text())
        utterances = manifest["utterances"]
    except (ValueError, KeyError, TypeError) as err:
        raise SpeechFTError(f"{manifest_path}: not a speechft corpus manifest ({type(err).__name__}: {err})") from None
    # the corpus's extra dev utterances (data/dev_extra.py) came after the shipped θ0: left out,
    # so the recipe still sees the same training and held-out lists
    kept = [u for u in utterances if u.get("task") in PRETRAIN_TASKS and not u.get("extra_dev")]
    train = [u for u in kept if u.get("split") == "train"]
    dev = [u for u in kept if u.get("split") == "dev"]
    if not train:
        raise SpeechFTError(f"{manifest_path}: lists no training utterances")
    return manifest, sha256_of(manifest_path), train, dev


def read_music(corpus):
    """A `speechft corpus --music` folder as pre-training data: its train clips, no dev.

    The test clips are the music tasks' test sets, so none of them is used, not even for the
    held-out masked accuracy.
    """
    manifest_path = Path(corpus) / "music.json"
    try:
        manifest = json.loads(manifest_path.read_text())
        clips = manifest["clips"]
        train = [c for c in clips if c.get("split") == "train"]
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise SpeechFTError(f"{manifest_path}: not a speechft music corpus manifest ({type(err).__name__}: {err})") from None
    if not train:
        raise SpeechFTError(f"{manifest_path}: lists no training clips")
    return manifest, sha256_of(manifest_path), train, []


def load_audio(corpus, utterances, min_samples):
    """int16 arrays of the utterances at least ``min_samples`` long (others skipped)."""
    import numpy as np
    import soundfile

    waves = []
    for u in utterances:
        if not isinstance(u, dict) or not isinstance(u.get("path"), str):
            raise SpeechFTError(f"{Path(corpus) / 'corpus.json'}: an utterance entry has no audio path ({str(u)[:80]})")
        path = Path(corpus) / u["path"]
        try:
            data, rate = soundfile.read(str(path), dtype="int16", always_2d=False)
        except Exception as err:
            raise SpeechFTError(f"{path}: cannot read audio ({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})") from None
        if rate != 16000 or data.ndim != 1:
            raise SpeechFTError(f"{path}: needs 16 kHz mono audio (got {rate} Hz, shape {data.shape})")
        if data.shape[0] >= min_samples:
            waves.append(np.ascontiguousarray(data))
    return waves


def mfcc_50hz(wave):
    """(T, 39) MFCC + Δ + ΔΔ at 50 Hz for an int16 wave (frame j ↔ samples [320 j, 320 j + 400))."""
    import torch
    import torchaudio.compliance.kaldi as kaldi
    from torchaudio.functional import compute_deltas

    x = torch.from_numpy(wave).float().div_(32768.0).view(1, -1)
    with torch.no_grad():
        mfcc = kaldi.mfcc(x, sample_frequency=16000, use_energy=False)  # (T, 13), 100 Hz, snip_edges
        feats = mfcc.transpose(0, 1)
        d1 = compute_deltas(feats)
        d2 = compute_deltas(d1)
        feats = torch.cat([feats, d1, d2], 0).transpose(0, 1)
    return feats[::2].contiguous().numpy()


def kmeans_labels(waves, clusters, seed, max_frames, progress):
    """Cluster ids per 50 Hz frame for every wave, and k-means statistics."""
    import numpy as np
    from tqdm import tqdm

    feats = [mfcc_50hz(w) for w in tqdm(waves, desc="mfcc", unit="utt", disable=not progress, file=sys.stderr)]
    frames = sum(f.shape[0] for f in feats)
    if frames < clusters:
        raise SpeechFTError(f"only {frames} MFCC frames in the training audio, fewer than --clusters {clusters}")
    labels, counts, km, stats = fit_kmeans(feats, clusters, seed, max_frames)
    p = counts / counts.sum()
    stats = {"frames": stats["frames"], "fit_frames": stats["fit_frames"],  # the record's key order
             "inertia_per_frame": round(float(km.inertia_) / stats["fit_frames"], 4),
             "used_clusters": stats["used_clusters"],
             "label_perplexity": round(float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum())), 2)}
    return labels, stats, km


def fit_kmeans(feats, clusters, seed, max_frames):
    """k-means on (a seeded sample of at most ``max_frames`` of) the frames of ``feats``: the ids per
    frame of every array, the count per cluster, the model, and frame counts. Both HuBERT
    iterations use it (MFCC targets here, layer features in recipe.py)."""
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    everything = np.concatenate(feats)
    rng = np.random.default_rng(seed)
    sample = everything if everything.shape[0] <= max_frames else everything[rng.choice(everything.shape[0], max_frames, replace=False)]
    km = MiniBatchKMeans(n_clusters=clusters, init="k-means++", max_iter=100, batch_size=10000, tol=0.0,
                         max_no_improvement=100, n_init=3, reassignment_ratio=0.0, random_state=seed)
    km.fit(sample)
    labels = [km.predict(f).astype(np.int64) for f in feats]
    counts = np.bincount(np.concatenate(labels), minlength=clusters)
    stats = {"frames": int(everything.shape[0]), "fit_frames": int(sample.shape[0]),
             "used_clusters": int((counts > 0).sum())}
    return labels, counts, km, stats


def make_batch(rng, waves, labels, order, batch_seconds, max_seconds, min_samples):
    """Random aligned crops of similar-length utterances: (B, T) audio and (B, F) 50 Hz labels."""
    import numpy as np
    import torch

    anchor = int(rng.integers(0, len(order)))
    first = len(waves[order[anchor]])
    length = max(min(first, int(max_seconds * 16000)), min_samples)
    count = max(1, int(batch_seconds * 16000 // length))
    lo = max(0, min(anchor - count // 2, len(order) - count))
    picks = order[lo:lo + count]
    length = max(min(length, min(len(waves[i]) for i in picks)), min_samples)
    frames = (length - 400) // HOP + 1
    audio, goals = [], []
    for i in picks:
        starts = (len(waves[i]) - length) // HOP  # crop start on a frame boundary
        s = int(rng.integers(0, starts + 1)) if starts > 0 else 0
        audio.append(waves[i][s * HOP:s * HOP + length])
        goals.append(labels[i][s:s + frames])
    wav = torch.from_numpy(np.stack(audio).astype(np.float32) / 32768.0)
    return wav, torch.from_numpy(np.stack(goals))
