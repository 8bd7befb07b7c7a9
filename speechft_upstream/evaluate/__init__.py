"""Evaluation helpers: the SUPERB score (score.py) and feature/weight analysis (analyze.py)."""
