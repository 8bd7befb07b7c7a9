"""`speechft benchmark`: the offline mini-SUPERB benchmark of Speech-FT (the main job of ./run.sh).

Stages (each cached under --work, checked and reused on the next run):
corpus → θ0 → stable fine-tuning on PR (θ′) → merges → SUPERB-protocol evaluations → α chosen on
dev → analyze → report (--out). See ``pipeline.py``.
"""
