"""Diarization error rate of RTTM files, scored by pyannote.metrics with SUPERB's settings.

SUPERB scores SD with dscore (s3prl's ``downstream/diarization/score.sh``): no forgiveness collar
and overlapped speech scored. pyannote.metrics' ``DiarizationErrorRate(collar=0.0,
skip_overlap=False)`` is the same measure: (missed speech + false alarm + speaker confusion) /
total reference speech, with the optimal one-to-one speaker mapping per recording, summed over
recordings (not averaged per recording). Without a UEM both take the scored region of a
recording as the extent of its reference and hypothesis turns.

The sweep (``score_predictions``) is what score.sh does with the h5 frame posteriors the
diarization expert writes on the test split: s3prl's own ``make_rttm.py`` at thresholds
0.3-0.7 and median filters 1 and 11, each RTTM scored; SUPERB reports the lowest DER.
"""

import math
import sys
import warnings
from pathlib import Path

from speechft_upstream.errors import SpeechFTError

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
MEDIANS = (1, 11)


def read_rttm(path):
    """{recording: pyannote Annotation} from the SPEAKER lines of an RTTM file."""
    from pyannote.core import Annotation, Segment

    path = Path(path)
    if not path.is_file():
        raise SpeechFTError(f"{path}: RTTM file not found")
    out = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise SpeechFTError(f"{path}:{number}: expected 'SPEAKER <rec> <chan> <start> <dur> <NA> <NA> <speaker> ...'")
        try:
            start, duration = float(fields[3]), float(fields[4])
        except ValueError:
            raise SpeechFTError(f"{path}:{number}: start and duration must be numbers, got {fields[3]!r} {fields[4]!r}") from None
        if not (math.isfinite(start) and math.isfinite(duration)) or duration < 0:
            raise SpeechFTError(f"{path}:{number}: bad turn (start {start}, duration {duration})")
        annotation = out.setdefault(fields[1], Annotation(uri=fields[1]))
        if duration > 0:
            annotation[Segment(start, start + duration), len(annotation)] = fields[7]
    return out


def der(reference, hypothesis):
    """DER (fraction) and its components over every recording of ``reference``.

    A recording the hypothesis lacks counts as all missed speech; hypothesis recordings absent
    from the reference are an error (they would be silently ignored otherwise).
    """
    from pyannote.core import Annotation
    from pyannote.metrics.diarization import DiarizationErrorRate

    extra = sorted(set(hypothesis) - set(reference))
    if extra:
        raise SpeechFTError(f"hypothesis has recordings the reference lacks: {', '.join(extra[:5])}")
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    with warnings.catch_warnings():
        # "uem was approximated by the union of reference and hypothesis extents": intended (see above)
        warnings.filterwarnings("ignore", message=".*uem.*approximated", category=UserWarning)
        for rec in sorted(reference):
            metric(reference[rec], hypothesis.get(rec, Annotation(uri=rec)))
    detail = metric[:]
    total = float(detail.get("total", 0.0))
    if total <= 0:
        raise SpeechFTError("the reference has no speech to score")
    value = abs(metric)
    return {"der": float(value), "missed": float(detail["missed detection"]) / total,
            "false_alarm": float(detail["false alarm"]) / total, "confusion": float(detail["confusion"]) / total,
            "reference_seconds": total}


def der_files(reference_rttm, hypothesis_rttm):
    return der(read_rttm(reference_rttm), read_rttm(hypothesis_rttm))


def _run_script(script, argv):
    """s3prl's make_rttm.py as score.sh runs it (a script: it parses sys.argv at import), in-process."""
    import runpy

    saved = sys.argv
    sys.argv = [str(script), *argv]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as err:
        if err.code:
            raise SpeechFTError(f"{script}: failed (exit {err.code})") from None
    except (OSError, KeyError, ValueError) as err:
        raise SpeechFTError(f"{script}: failed ({err})") from None
    finally:
        sys.argv = saved


def score_predictions(prediction_dir, reference_rttm, frame_shift, work_dir, sample_rate=16000):
    """score.sh's sweep over s3prl's make_rttm.py settings: {"best": {...}, "settings": [...]}."""
    prediction_dir, work_dir = Path(prediction_dir), Path(work_dir)
    h5 = sorted(prediction_dir.glob("*.h5"))
    if not h5:
        raise SpeechFTError(f"{prediction_dir}: no *.h5 predictions (the diarization expert writes them on the test split)")
    reference = read_rttm(reference_rttm)
    work_dir.mkdir(parents=True, exist_ok=True)
    file_list = work_dir / "file_list"
    file_list.write_text("".join(f"{p}\n" for p in h5))
    import s3prl.downstream.diarization as diarization

    make_rttm = Path(diarization.__file__).with_name("make_rttm.py")
    settings = []
    for median in MEDIANS:
        for threshold in THRESHOLDS:
            rttm = work_dir / f"hyp_{threshold}_{median}.rttm"
            _run_script(make_rttm, [f"--median={median}", f"--threshold={threshold}", f"--frame_shift={frame_shift}",
                                    "--subsampling=1", f"--sampling_rate={sample_rate}", str(file_list), str(rttm)])
            row = {"threshold": threshold, "median": median, "rttm": str(rttm)}
            row.update(der(reference, read_rttm(rttm)))
            settings.append(row)
    best = min(settings, key=lambda r: (r["der"], r["median"], abs(r["threshold"] - 0.5)))
    return {"best": best, "settings": settings}


def main(argv=None):
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m speechft_upstream.evaluate.der",
                                     description="DER of a hypothesis RTTM against a reference RTTM "
                                                 "(pyannote.metrics, collar 0, overlap scored)")
    parser.add_argument("reference")
    parser.add_argument("hypothesis")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(der_files(args.reference, args.hypothesis)))
    except SpeechFTError as err:
        print(f"speechft: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
