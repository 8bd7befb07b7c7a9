"""Per-item outcomes of one s3prl evaluation run, for the paired tests (``stats.py``).

s3prl 0.4.18's downstream experts write each item's prediction next to the truth in the
experiment folder when they log a dev or test pass (``log_records``):

- ``ctc`` (PR): ``<split>-hyp.ark`` / ``<split>-ref.ark``, ``<file> <tokens…>`` per line; PER is
  s3prl's ``wer`` over space-separated tokens (ctc/metric.py), so an item is
  [edit distance, reference length] with the same split on ' ';
- ``voxceleb1`` (SID), ``speech_commands`` (KS): ``<split>_predict.txt`` / ``<split>_truth.txt``;
- ``emotion`` (ER): ``<split>_<fold>_predict.txt`` / ``<split>_<fold>_truth.txt``;
- ``fluent_commands`` (IC): ``<split>_predict.csv`` / ``<split>_truth.csv`` (action,object,location;
  an item is right when all three are, as s3prl's accuracy counts it).

A classification item is 1 (right) or 0. Item ids are the file names s3prl logs; an id seen
twice gets ``#2``, ``#3``… so that no outcome is lost. ``items.json``:
``{"split", "kind": "accuracy"|"error_rate", "metric", "value", "items": {id: outcome}, "files"}``.
"""

import json
from pathlib import Path

from speechft_upstream.errors import SpeechFTError


def _lines(path):
    return [line.rstrip("\r\n") for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]


def _keyed(path, sep):
    """(id, rest) per line, in order, duplicate ids numbered."""
    out, seen = [], {}
    for line in _lines(path):
        if not line.strip():
            continue
        key, _, rest = line.partition(sep)
        seen[key] = seen.get(key, 0) + 1
        out.append((key if seen[key] == 1 else f"{key}#{seen[key]}", rest))
    return out


def _pair(pred_path, truth_path, sep):
    pred, truth = _keyed(pred_path, sep), _keyed(truth_path, sep)
    if [k for k, _ in pred] != [k for k, _ in truth]:
        raise SpeechFTError(f"{pred_path}: its items differ from {truth_path}'s")
    return [(k, p, t) for (k, p), (_, t) in zip(pred, truth)]


def _edits(hyp, ref):
    import editdistance

    # exactly s3prl's ctc/metric.py wer(): str.split(' '), so an empty hypothesis is [''].
    h, r = hyp.split(" "), ref.split(" ")
    return [int(editdistance.eval(h, r)), len(r)]


def find(exp, split):
    """The prediction files of ``split`` in ``exp``: (kind, predictions, truths, separator) or None."""
    exp = Path(exp)
    hyp, ref = exp / f"{split}-hyp.ark", exp / f"{split}-ref.ark"
    if hyp.is_file() and ref.is_file():
        return "error_rate", hyp, ref, " "
    for pattern, sep in ((f"{split}_predict.txt", " "), (f"{split}_*_predict.txt", " "), (f"{split}_predict.csv", ",")):
        for pred in sorted(exp.glob(pattern)):
            truth = pred.with_name(pred.name.replace("_predict.", "_truth."))
            if truth.is_file():
                return "accuracy", pred, truth, sep
    return None


def collect(exp, split="test"):
    """{"split", "kind", "items", "files"} from the run's prediction files; SpeechFTError if none."""
    found = find(exp, split)
    if found is None:
        raise SpeechFTError(f"{exp}: no per-item predictions of the {split} split (<split>-hyp.ark, "
                            f"<split>_predict.txt or .csv) from the downstream")
    kind, pred, truth, sep = found
    items = {}
    for key, p, t in _pair(pred, truth, sep):
        items[key] = _edits(p, t) if kind == "error_rate" else int(p.strip() == t.strip())
    if not items:
        raise SpeechFTError(f"{pred}: no items")
    return {"split": split, "kind": kind, "items": items, "files": [pred.name, truth.name]}


def value(record):
    """The corpus-level metric of an items record (fraction): accuracy or Σ edits / Σ length."""
    items = record["items"].values()
    if record["kind"] == "accuracy":
        return sum(items) / len(items)
    return sum(e for e, _ in items) / max(1, sum(n for _, n in items))


def load(path):
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise SpeechFTError(f"{path}: not a readable items file ({err})") from None
    if not isinstance(data, dict) or data.get("kind") not in ("accuracy", "error_rate") \
            or not isinstance(data.get("items"), dict):
        raise SpeechFTError(f"{path}: expected {{kind: accuracy|error_rate, items: {{id: outcome}}}}")
    return data
