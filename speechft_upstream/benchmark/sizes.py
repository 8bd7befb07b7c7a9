"""What the benchmark runs: tasks, α values and the three sizes (full, quick, smoke)."""

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

# Sizes. Evaluation: steps, batch size, learning rate of the head per task; every run uses one
# gradient accumulation step and no data-loader workers (2 cores). "smoke" is for the tests.
SIZES = {
    "full": {
        "corpus": "default", "theta0": "shipped", "alphas": ALPHAS,
        "finetune": {"steps": 800, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (400, 8, 1e-2), "SID": (400, 8, 5e-3), "KS": (300, 16, 5e-3),
                 "IC": (300, 16, 5e-3), "ER": (300, 8, 5e-3)},
        "analyze_files": 60,
    },
    "quick": {
        "corpus": "quick", "theta0": "shipped", "alphas": (0.25, 0.5, 1.0),
        "finetune": {"steps": 200, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (120, 8, 1e-2), "SID": (100, 8, 1e-2), "KS": (100, 16, 1e-2),
                 "IC": (100, 16, 1e-2), "ER": (100, 8, 1e-2)},
        "analyze_files": 30,
    },
    # the tests' size: a tiny corpus, random θ0, three tasks
    "smoke": {
        "corpus": "tiny", "theta0": "make-tiny", "alphas": (0.25, 1.0), "tasks": ("PR", "KS", "IC"),
        "finetune": {"steps": 4, "batch": 2, "lr": 1e-3, "beta": 0.25},
        "eval": {t: (3, 2, 1e-3) for t in TASKS},
        "analyze_files": 6,
    },
}

BASELINE = "fbank"
ENCODER_LABELS = {"fbank": "FBANK", "theta0": "θ0", "theta_prime": "θ′", "theta_hat": "θ̂"}
