"""What the benchmark runs: tasks, α values and the sizes (full, quick, smoke; paper for real data)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "downstream_recipes"
ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0)
PAPER_ALPHA = 0.25  # the α the Speech-FT paper uses; always in the analysis

# task: (recipe, corpus subfolder, metric the runner prints, name in the table, higher is better)
TASKS = {
    "PR": ("pr.sh", "pr", "per", "PER", False),
    "SID": ("sid.sh", "sid", "acc", "ACC", True),
    "KS": ("ks.sh", "ks", "acc", "ACC", True),
    "IC": ("ic.sh", "ic", "acc", "ACC", True),
    "ER": ("er.sh", "er", "acc", "ACC", True),
}

# Fine-tuning tasks (θ0 → θ′): recipe, data subfolder, metric the runner prints on dev. PR for
# the mini benchmark; ASR_TED (TED-LIUM 3 ASR) is the paper's, used with --data-root.
FINETUNE_TASKS = {
    "PR": ("pr.sh", "pr", "per"),
    "ASR_TED": ("asr_ted.sh", "asr_ted", "wer"),
}

# Sizes. Evaluation per task: (most steps, batch size, learning rate[, steps between dev
# evaluations]) of the head; it trains until ``patience`` dev evaluations in a row bring no
# improvement, or the most steps. Each encoder × task is evaluated once per seed in ``seeds``
# (the runner's --seed: head initialisation and data order). Every run uses one gradient
# accumulation step and no data-loader workers (2 cores). "smoke" is for the tests.
SIZES = {
    "full": {
        "corpus": "default", "theta0": "shipped", "alphas": ALPHAS, "seeds": (1, 2, 3), "patience": 3,
        "finetune": {"steps": 800, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (800, 8, 1e-2, 100), "SID": (800, 8, 5e-3, 100), "KS": (600, 16, 5e-3, 100),
                 "IC": (600, 16, 5e-3, 100), "ER": (600, 8, 5e-3, 100)},
        "analyze_files": 60,
    },
    "quick": {
        "corpus": "quick", "theta0": "shipped", "alphas": (0.25, 0.5, 1.0), "seeds": (1, 2, 3), "patience": 2,
        "finetune": {"steps": 200, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (160, 8, 1e-2, 40), "SID": (160, 8, 1e-2, 40), "KS": (120, 16, 1e-2, 40),
                 "IC": (120, 16, 1e-2, 40), "ER": (120, 8, 1e-2, 40)},
        "analyze_files": 30,
    },
        # real SUPERB data (--data-root) with the paper's budgets. Evaluation: s3prl's SUPERB configs
    # (total_steps, batch, lr, gradient accumulation, eval_step), as downstream_recipes/configs/
    # <task>.yaml record them (s3prl 0.4.18's PyPI package ships no downstream config.yaml), all
    # steps trained (no early stopping). Fine-tuning: the authors' asr_ted recipe (NOTES.md:
    # 50k steps, batch 32, Adam 1e-4, the 10-hour train subset), stable fine-tuning with β 0.1.
    "paper": {
        "corpus": None, "theta0": "given", "alphas": ALPHAS, "seeds": (1, 2, 3), "patience": None,
        "finetune": {"steps": 50000, "batch": 32, "lr": 1e-4, "beta": 0.1, "eval_every": 2000, "train_hours": 10},
        "eval": {"PR": (100000, 16, 1e-2, 1000, 2), "ASR": (200000, 32, 1e-4, 2000, 1),
                 "KS": (200000, 32, 1e-4, 4000, 1), "QBE": (1, 1, 1e-4, 1, 1),  # DTW: no head, no steps
                 "SID": (200000, 8, 1e-4, 4000, 4), "ASV": (200000, 10, 1e-4, 10000, 5),
                 "SD": (30000, 8, 1e-4, 500, 4), "ER": (30000, 4, 1e-4, 1000, 8),
                 "IC": (200000, 32, 1e-4, 4000, 1), "SF": (200000, 32, 1e-4, 2000, 1)},
        "workers": None, "feature_cache_mb": None, "analyze_files": 200,
    },
    # the tests' size: a tiny corpus, random θ0, three tasks
    "smoke": {
        "corpus": "tiny", "theta0": "make-tiny", "alphas": (0.25, 1.0), "tasks": ("PR", "KS", "IC"),
        "seeds": (1, 2), "patience": 1,
        "finetune": {"steps": 4, "batch": 2, "lr": 1e-3, "beta": 0.25},
        "eval": {t: (4, 2, 1e-3, 2) for t in TASKS},
        "analyze_files": 6,
    },
}

# The frozen upstream's features are computed once per utterance and evaluation process (all
# seeds of one encoder × task), see compat/feature_cache.py; this bounds the memory it may use
# (KS, whose random silence crops never repeat, filled 970 MB over 3 seeds at the full size).
FEATURE_CACHE_MB = 1500

BASELINE = "fbank"
ENCODER_LABELS = {"fbank": "FBANK", "theta0": "θ0", "theta_prime": "θ′", "theta_hat": "θ̂"}


def eval_budget(size, task):
    """{steps, batch, lr, eval_every, patience, seeds, feature_cache_mb[, accumulate, workers]} of one
    task's evaluation runs. accumulate / workers appear only where a size sets them, so the keys
    (and caches) of the other sizes stay as they were."""
    spec = SIZES[size]["eval"][task]
    steps, batch, lr = spec[:3]
    every = spec[3] if len(spec) > 3 else (steps if steps < 40 else steps // 4)
    budget = {"steps": steps, "batch": batch, "lr": lr, "eval_every": min(every, steps),
              "patience": SIZES[size].get("patience"), "seeds": tuple(SIZES[size].get("seeds", (1337,))),
              "feature_cache_mb": SIZES[size].get("feature_cache_mb", FEATURE_CACHE_MB)}
    if len(spec) > 4:
        budget["accumulate"] = spec[4]
    if "workers" in SIZES[size]:
        budget["workers"] = SIZES[size]["workers"]
    return budget
