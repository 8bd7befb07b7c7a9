"""speechft score on the WER rows the ASR recipes write (asr.sh: LibriSpeech; asr_ted.sh: TED-LIUM 3)."""

import json

import pytest

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate import score


def results(tmp_path, rows):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    return path


def test_asr_wer_against_the_leaderboard_points(tmp_path):
    # as asr.sh's results.json names them: task "asr", metric "wer", split "test-clean"
    rows = [{"encoder": "hubert", "task": "asr", "metric": "wer", "value": 6.38, "split": "test-clean"},
            {"encoder": "speech_ft", "task": "asr", "metric": "wer", "value": 5.75, "split": "test-clean"}]
    scores, refs = score.run(results(tmp_path, rows), split="test-clean")
    assert refs["tasks"]["ASR"]["WER"] == {"fbank": 23.18, "sota": 3.62}  # superbbenchmark.org
    # a lower WER scores higher: (6.38 − 23.18) / (3.62 − 23.18) = 0.858896
    assert scores["hubert"]["tasks"]["ASR"]["normalised"] == pytest.approx(16.80 / 19.56)
    assert scores["speech_ft"]["score"] == pytest.approx(1000 * 17.43 / 19.56)


def test_asr_ted_is_not_a_superb_task(tmp_path):
    """TED-LIUM 3 is the authors' fine-tuning task; the leaderboard has no reference points for it."""
    rows = [{"encoder": "theta_prime", "task": "asr_ted", "metric": "wer", "value": 12.0, "split": "test"}]
    with pytest.raises(SpeechFTError, match=r"task 'asr_ted' \(encoder 'theta_prime'\) has no reference points"):
        score.run(results(tmp_path, rows))
