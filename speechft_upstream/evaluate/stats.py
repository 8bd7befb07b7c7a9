"""Confidence intervals over seeds and paired significance tests over test items.

Items come from ``items.json`` (see ``items.py``): per test item either ``correct`` (0/1, the
accuracy tasks) or ``[edits, length]`` (the error-rate tasks, PER). With several seeds per
encoder, the tests treat the *item* as the unit that is sampled: each item's outcomes are summed
over the seeds first (seed s of one encoder paired with seed s of the other: same head
initialisation and data order). Seeds of one item are not independent of each other, so
counting (item, seed) pairs as independent would overstate the evidence.

- Accuracy: McNemar's exact test, item level. An item counts for the encoder that got it right
  in more seeds; items where both did equally well drop out; the count is tested against
  Binomial(n, ½) (``scipy.stats.binomtest``). With one seed this is the textbook exact McNemar
  test on the discordant pairs.
- Error rates: paired bootstrap over items (Koehn 2004; Bisani & Ney 2004). The corpus-level
  rate is Σ edits / Σ length, so items are resampled with replacement, both encoders with the
  same draw, and the difference of the two rates is recomputed. The p-value is two-sided, from
  the bootstrap distribution centred on the observed difference (the null shifted to 0):
  p = (1 + #{|δ* − δ| ≥ |δ|}) / (B + 1).
"""

import math

import numpy as np

from speechft_upstream.errors import SpeechFTError

BOOTSTRAP_SAMPLES = 10000


def mean_ci(values, level=0.95):
    """(mean, [low, high]) of the mean over seeds: Student's t-interval, n − 1 degrees of freedom.

    One value has no spread to estimate: its interval is None. Equal values give [v, v].
    """
    from scipy import stats

    x = np.asarray([float(v) for v in values], dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise SpeechFTError(f"mean_ci: expected finite values, got {list(values)!r}")
    mean = float(x.mean())
    if x.size < 2:
        return mean, None
    sem = float(x.std(ddof=1) / math.sqrt(x.size))
    if sem == 0.0:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * sem
    return mean, [mean - half, mean + half]


def _aligned(a, b, what):
    """Common item ids of two {seed: {item: outcome}} maps, seeds paired by their name."""
    seeds = sorted(set(a) & set(b), key=str)
    if not seeds:
        raise SpeechFTError(f"{what}: the two encoders share no seed (have {sorted(a)} and {sorted(b)})")
    ids = None
    for s in seeds:
        common = set(a[s]) & set(b[s])
        ids = common if ids is None else ids & common
    ids = sorted(ids)
    if not ids:
        raise SpeechFTError(f"{what}: the two encoders share no test item")
    return seeds, ids


def mcnemar_exact(a_correct, b_correct):
    """Two-sided exact McNemar p-value for paired per-item correct counts (0..seeds each).

    ``a_correct[i]``, ``b_correct[i]``: how many seeds got item i right. Returns (p, wins of a,
    wins of b).
    """
    from scipy import stats

    a = np.asarray(a_correct, dtype=np.float64)
    b = np.asarray(b_correct, dtype=np.float64)
    if a.shape != b.shape:
        raise SpeechFTError("mcnemar_exact: the two encoders were scored on different numbers of items")
    wins_a, wins_b = int(np.sum(a > b)), int(np.sum(b > a))
    if wins_a + wins_b == 0:
        return 1.0, wins_a, wins_b
    return float(stats.binomtest(wins_a, wins_a + wins_b, 0.5).pvalue), wins_a, wins_b


def paired_bootstrap(a_edits, b_edits, lengths, samples=BOOTSTRAP_SAMPLES, seed=0):
    """Two-sided paired-bootstrap p-value for the difference of two corpus-level error rates.

    Per item: edits of a, edits of b (each summed over seeds) and the reference length (also
    summed over seeds). Returns (p, observed difference a − b).
    """
    ea, eb, n = (np.asarray(v, dtype=np.float64) for v in (a_edits, b_edits, lengths))
    if not (ea.shape == eb.shape == n.shape) or ea.ndim != 1 or ea.size == 0:
        raise SpeechFTError("paired_bootstrap: expected three equal-length, non-empty per-item lists")
    if np.sum(n) <= 0:
        raise SpeechFTError("paired_bootstrap: the references have no tokens")
    observed = float((ea.sum() - eb.sum()) / n.sum())
    rng = np.random.default_rng(seed)
    diff = ea - eb
    deltas = np.empty(samples)
    for start in range(0, samples, 1000):  # chunks: bounded memory for large test sets
        stop = min(samples, start + 1000)
        idx = rng.integers(0, ea.size, size=(stop - start, ea.size))
        deltas[start:stop] = diff[idx].sum(axis=1) / n[idx].sum(axis=1)
    if observed == 0.0 and np.all(diff == 0):
        return 1.0, observed
    # the tiny tolerance keeps resamples equal to the observed |δ| (ties) on the null's side
    extreme = np.sum(np.abs(deltas - observed) >= abs(observed) - 1e-12)
    return float((1 + extreme) / (samples + 1)), observed


def paired_test(a, b, kind, what="paired test", samples=BOOTSTRAP_SAMPLES, seed=0):
    """p-value of encoder a against encoder b on one task's test items.

    ``a``, ``b``: {seed: {item id: outcome}}, outcome 0/1 (``kind`` "accuracy") or
    [edits, length] (``kind`` "error_rate"). Returns {"p", "test", "items", "seeds", ...}.
    """
    seeds, ids = _aligned(a, b, what)
    if kind == "accuracy":
        ca = [sum(int(a[s][i]) for s in seeds) for i in ids]
        cb = [sum(int(b[s][i]) for s in seeds) for i in ids]
        p, wins_a, wins_b = mcnemar_exact(ca, cb)
        return {"p": p, "test": "mcnemar_exact", "items": len(ids), "seeds": len(seeds),
                "wins_a": wins_a, "wins_b": wins_b}
    if kind == "error_rate":
        for s in seeds:
            for i in ids:
                if a[s][i][1] != b[s][i][1]:
                    raise SpeechFTError(f"{what}: item {i} has reference length {a[s][i][1]} for one "
                                        f"encoder and {b[s][i][1]} for the other")
        ea = [sum(a[s][i][0] for s in seeds) for i in ids]
        eb = [sum(b[s][i][0] for s in seeds) for i in ids]
        n = [sum(a[s][i][1] for s in seeds) for i in ids]
        p, delta = paired_bootstrap(ea, eb, n, samples=samples, seed=seed)
        return {"p": p, "test": "paired_bootstrap", "items": len(ids), "seeds": len(seeds),
                "difference": delta, "samples": samples}
    raise SpeechFTError(f"{what}: unknown outcome kind {kind!r} (accuracy or error_rate)")


def resolution(items, kind, level=0.95, samples=2000, seed=0):
    """The smallest difference between two independent evaluations on these items that is
    resolved at ``level``: z · √2 · (bootstrap standard error of the metric), in the metric's
    units (fractions). Paired comparisons on the same items resolve somewhat less.
    """
    from scipy import stats

    ids = sorted(items)
    if not ids:
        raise SpeechFTError("resolution: no items")
    rng = np.random.default_rng(seed)
    if kind == "accuracy":
        num = np.asarray([float(items[i]) for i in ids])
        den = np.ones_like(num)
    elif kind == "error_rate":
        num = np.asarray([float(items[i][0]) for i in ids])
        den = np.asarray([float(items[i][1]) for i in ids])
    else:
        raise SpeechFTError(f"resolution: unknown outcome kind {kind!r}")
    idx = rng.integers(0, len(ids), size=(samples, len(ids)))
    values = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-12)
    z = float(stats.norm.ppf(0.5 + level / 2))
    return {"items": len(ids), "standard_error": float(values.std(ddof=1)),
            "smallest_difference": z * math.sqrt(2.0) * float(values.std(ddof=1))}
