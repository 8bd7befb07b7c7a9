"""IEMOCAP release -> the meta-data JSON files of s3prl's `emotion` downstream (SUPERB ER).

    python downstream_recipes/prepare/iemocap.py IEMOCAP_full_release [-o OUT]

Reads ``Session<N>/dialog/EmoEvaluation/*.txt`` (one ``[start - end]<TAB>utterance<TAB>label
<TAB>[V, A, D]`` line per turn) and ``Session<N>/sentences/wav/<dialog>/<utterance>.wav``, and
writes, for each session N, ``OUT/Session<N>/test_meta_data.json`` (that session) and
``train_meta_data.json`` (the other sessions): leave-one-session-out, the five SUPERB folds.
OUT defaults to IEMOCAP_full_release/meta_data, where er.sh looks for it.

What s3prl's dataset reads (downstream/emotion/dataset.py): ``{"labels": {name: index},
"meta_data": [{"path", "label", ...}]}``, paths relative to the data root. Like SUPERB, four
classes: neu, hap (with exc merged into it), ang, sad; other labels (fru, sur, xxx, ...) are left
out. Each entry also names its speaker (``Ses01F``: session and the actor's gender letter).
"""

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from speechft_upstream.errors import SpeechFTError  # noqa: E402

LABELS = {"neu": 0, "hap": 1, "ang": 2, "sad": 3}
MERGED = {"exc": "hap"}
_TURN = re.compile(r"^\[\s*[-\d.]+\s*-\s*[-\d.]+\s*\]\t(\S+)\t(\S+)\t")


def sessions(root):
    found = sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"Session\d+", p.name)),
                   key=lambda p: int(p.name[7:]))
    if len(found) < 2:
        raise SpeechFTError(f"{root}: expected Session1 ... Session5 folders (an IEMOCAP release), "
                            f"found {len(found)}")
    return found


def session_items(root, session):
    """The session's utterances with one of the four labels, in file and line order."""
    labels_dir = session / "dialog" / "EmoEvaluation"
    if not labels_dir.is_dir():
        raise SpeechFTError(f"{labels_dir}: missing (IEMOCAP layout: Session<N>/dialog/EmoEvaluation/*.txt)")
    items, missing = [], 0
    for txt in sorted(labels_dir.glob("*.txt")):
        dialog = txt.stem
        for line in txt.read_text(errors="replace").splitlines():
            match = _TURN.match(line)
            if not match:
                continue
            utterance, label = match.groups()
            label = MERGED.get(label, label)
            if label not in LABELS:
                continue
            wav = session / "sentences" / "wav" / dialog / f"{utterance}.wav"
            if not wav.is_file():
                missing += 1
                continue
            speaker = utterance.split("_")[0][:5] + utterance.rsplit("_", 1)[-1][:1]
            items.append({"path": wav.relative_to(root).as_posix(), "label": label, "speaker": speaker})
    if not items:
        raise SpeechFTError(f"{labels_dir}: no utterance labelled {', '.join(LABELS)} (or exc) has its wav "
                            f"under {session / 'sentences' / 'wav'}")
    return items, missing


def prepare(root, out=None, log=print):
    from speechft_upstream.checkpoints.files import write_json_atomic

    root = Path(root)
    if not root.is_dir():
        raise SpeechFTError(f"{root}: no such folder")
    out = Path(out) if out else root / "meta_data"
    per_session = {}
    for session in sessions(root):
        items, missing = session_items(root, session)
        per_session[session.name] = items
        note = f" ({missing} labelled turns without a wav file left out)" if missing else ""
        log(f"{session.name}: {len(items)} utterances{note}")
    for name, test in per_session.items():
        train = [item for other, items in per_session.items() if other != name for item in items]
        for split, items in (("train", train), ("test", test)):
            try:
                write_json_atomic({"labels": LABELS, "meta_data": items}, out / name / f"{split}_meta_data.json")
            except OSError as err:
                raise SpeechFTError(f"{out}: cannot write the meta data ({err.strerror}); give -o DIR") from None
    log(f"wrote {len(per_session)} folds to {out}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="iemocap.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", metavar="IEMOCAP_ROOT", help="the release folder (holds Session1 ... Session5)")
    parser.add_argument("-o", "--output", metavar="OUT", help="meta-data folder (default IEMOCAP_ROOT/meta_data)")
    args = parser.parse_args(argv)
    try:
        prepare(args.root, args.output)
    except SpeechFTError as err:
        print(f"speechft: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
