"""Data for the offline mini benchmark: eSpeak NG synthesis (espeak.py) and the corpus (corpus.py)."""
