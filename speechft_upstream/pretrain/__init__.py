"""The mini benchmark's θ0: ``train`` is `speechft pretrain` (a small HuBERT, masked prediction),
``data`` reads the corpus and makes its MFCC k-means targets and batches."""
