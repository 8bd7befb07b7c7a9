"""The mini benchmark's θ0: ``train`` is `speechft pretrain` (a small HuBERT, masked prediction),
``recipe`` its two HuBERT iterations and the codeword-usage check, ``data`` the corpus's MFCC
k-means targets and batches, ``shipped`` the file in assets/ that the benchmark uses (sha256)."""
