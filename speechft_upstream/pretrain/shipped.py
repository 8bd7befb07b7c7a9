"""The mini benchmark's θ0, shipped in the repository: pre-trained once, checked by sha256 on use.

``assets/theta0_mini_superb.pt`` was made by REBUILD on the default corpus (``speechft corpus``,
seed 0); ``assets/theta0_mini_superb.pt.json`` beside it is `speechft pretrain`'s record of that
run (settings, loss curve, held-out codeword usage, time). ``speechft benchmark --pretrain``
runs the recipe instead of using the file.
"""

from pathlib import Path

from speechft_upstream.errors import SpeechFTError

ASSET = Path(__file__).resolve().parents[2] / "assets" / "theta0_mini_superb.pt"
SHA256 = "5209dd1742a47a47cf47c4bb267fd189e9143abf0417787633074168eb789dfd"
REBUILD = "speechft corpus --out CORPUS && speechft pretrain --recipe mini-superb --corpus CORPUS -o theta0_mini_superb.pt"


def verified(path=ASSET, sha256=SHA256):
    """``path`` after checking that its sha256 is the recorded one."""
    from speechft_upstream.pretrain.data import sha256_of

    path = Path(path)
    if not path.is_file():
        raise SpeechFTError(f"{path}: the shipped θ0 is missing (rebuild it with `{REBUILD}`, or run the "
                            "benchmark with --pretrain)")
    actual = sha256_of(path)
    if actual != sha256:
        raise SpeechFTError(f"{path}: sha256 {actual[:16]}… is not the recorded {sha256[:16]}… (changed or "
                            f"truncated; restore it from git, or rebuild it with `{REBUILD}`)")
    return path
