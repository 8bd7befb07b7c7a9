"""Stand-ins for benchmark/stage_baselines.py and benchmark/stage_unsupervised.py (their
interfaces as plan.py / experiments.py call them), for testing the pipeline's handling of those
experiments without their training: each θ′ is an existing merge of the smoke run (a real
checkpoint, different from θ0 and from θ′_pr), the second language's corpus is the smoke corpus.
"""

from pathlib import Path

BASELINES = ("l2", "lora", "early")
ENCODER_NAMES = {k: f"theta_prime_{k}" for k in BASELINES}
LANGUAGE = "xx"
PR_TASK = "PR_" + LANGUAGE.upper()
ENCODER_NAME = "theta_prime_unsup_" + LANGUAGE
_ALPHA = {"l2": "0.5", "lora": "0.1", "early": "0.25"}


def stage_baseline(work, size, corpus_info, theta0, device, kind, task="PR"):
    path = Path(work) / "merge" / f"theta_hat_alpha{_ALPHA[kind]}.pt"
    return {"path": str(path.resolve()), "kind": kind, "task": task, "fake": True}


def stage_language_corpus(work, size, seed):
    corpus = Path(work) / "corpus" / "data"
    return {"dir": str(corpus.resolve()), "language": LANGUAGE, "fake": True}


def stage_unsupervised(work, size, lang_corpus, theta0, device):
    path = Path(work) / "merge" / "theta_hat_alpha0.75.pt"
    return {"path": str(path.resolve()), "language": LANGUAGE, "fake": True}
