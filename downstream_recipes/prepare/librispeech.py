"""LibriSpeech folder -> the bucket files of s3prl's `asr` downstream (``len_for_bucket``).

    python downstream_recipes/prepare/librispeech.py LIBRISPEECH_ROOT [-o OUT] [--splits S ...]

For each split folder (``train-clean-100``, ``dev-clean``, ... : every folder of
``<speaker>/<chapter>/*.flac`` with ``<speaker>-<chapter>.trans.txt``) writes ``OUT/<split>.csv``
with the columns s3prl's dataset reads (downstream/asr/dataset.py): ``file_path`` (relative to the
root) and ``length`` (samples), longest first, as s3prl's preprocess/generate_len_for_bucket.py
writes them. OUT defaults to LIBRISPEECH_ROOT/len_for_bucket, where asr.sh looks (asr.sh runs this
itself when a CSV is missing). Lengths come from the file headers (soundfile), not by decoding.
"""

import argparse
import csv
import io
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from speechft_upstream.errors import SpeechFTError  # noqa: E402


def split_folders(root):
    return sorted(p.name for p in root.iterdir() if p.is_dir() and next(p.glob("*/*/*.trans.txt"), None))


def lengths(root, split, audio_ext=".flac"):
    import soundfile
    from tqdm import tqdm

    folder = root / split
    if not folder.is_dir():
        raise SpeechFTError(f"{folder}: no such split folder (LibriSpeech layout: <split>/<speaker>/<chapter>/*.flac)")
    paths = sorted(folder.glob(f"*/*/*{audio_ext}"))
    if not paths:
        raise SpeechFTError(f"{folder}: no <speaker>/<chapter>/*{audio_ext} files")
    rows = []
    for path in tqdm(paths, desc=f"len_for_bucket {split}", unit="file", disable=None):
        try:
            frames = soundfile.info(str(path)).frames
        except RuntimeError as err:
            raise SpeechFTError(f"{path}: not a readable audio file ({str(err).splitlines()[0]})") from None
        rows.append((path.relative_to(root).as_posix(), frames))
    rows.sort(key=lambda row: row[1], reverse=True)
    return rows


def write_csv(rows, path):
    from speechft_upstream.checkpoints.files import write_text_atomic

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["", "file_path", "length", "label"])  # s3prl's own CSVs: pandas index, no labels
    for i, (rel, frames) in enumerate(rows):
        writer.writerow([i, rel, frames, ""])
    write_text_atomic(text.getvalue(), path)


def prepare(root, out=None, splits=None, log=print):
    root = Path(root)
    if not root.is_dir():
        raise SpeechFTError(f"{root}: no such folder")
    out = Path(out) if out else root / "len_for_bucket"
    splits = list(splits) if splits else split_folders(root)
    if not splits:
        raise SpeechFTError(f"{root}: no LibriSpeech split folders (<split>/<speaker>/<chapter>/*.trans.txt)")
    for split in splits:
        rows = lengths(root, split)
        try:
            write_csv(rows, out / f"{split}.csv")
        except OSError as err:
            raise SpeechFTError(f"{out}: cannot write the bucket files ({err.strerror}); give -o DIR") from None
        log(f"{split}: {len(rows)} files, {sum(r[1] for r in rows) / 16000 / 3600:.2f} h -> {out / (split + '.csv')}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="librispeech.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="LIBRISPEECH_ROOT", help="the folder holding train-clean-100/, dev-clean/, ...")
    parser.add_argument("-o", "--output", metavar="OUT", help="bucket-file folder (default LIBRISPEECH_ROOT/len_for_bucket)")
    parser.add_argument("--splits", nargs="+", metavar="SPLIT", help="split folders (default: every one found)")
    args = parser.parse_args(argv)
    try:
        prepare(args.root, args.output, args.splits)
    except SpeechFTError as err:
        print(f"speechft: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
