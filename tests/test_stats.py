"""evaluate/stats.py and evaluate/items.py on hand-computed cases."""

import math

import pytest

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate import items, stats


def test_t_interval_of_three_seeds():
    # mean 2, s = 1, sem = 1/√3, t(0.975, 2 df) = 4.302653 -> half width 2.484138
    mean, ci = stats.mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert ci[0] == pytest.approx(2.0 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert ci[1] == pytest.approx(2.0 + 4.302653 / math.sqrt(3), abs=1e-5)
    # two seeds: t(0.975, 1 df) = 12.706205, sem = |a − b| / 2
    mean, ci = stats.mean_ci([10.0, 12.0])
    assert mean == 11.0 and ci[1] - mean == pytest.approx(12.706205, abs=1e-5)


def test_t_interval_edge_cases():
    assert stats.mean_ci([5.0]) == (5.0, None)
    assert stats.mean_ci([2.5, 2.5, 2.5]) == (2.5, [2.5, 2.5])
    with pytest.raises(SpeechFTError):
        stats.mean_ci([1.0, float("nan")])


def test_mcnemar_exact_one_seed():
    # 10 both right, 9 right only for b, 1 right only for a, 5 both wrong:
    # p = 2 · P(X ≤ 1 | n = 10, ½) = 2 · (1 + 10) / 1024
    a = {0: {f"u{i}": int(i < 10 or i == 19) for i in range(25)}}
    b = {0: {f"u{i}": int(i < 19) for i in range(25)}}
    out = stats.paired_test(a, b, "accuracy")
    assert (out["wins_a"], out["wins_b"], out["items"], out["seeds"]) == (1, 9, 25, 1)
    assert out["p"] == pytest.approx(22 / 1024, rel=1e-12)
    assert out["test"] == "mcnemar_exact"
    assert stats.paired_test(a, a, "accuracy")["p"] == 1.0


def test_mcnemar_counts_items_not_item_seed_pairs():
    # two seeds; item x: a right twice, b once -> a wins x; item y: b right twice, a never ->
    # b wins y; item z: both right once -> a tie, dropped. One win each: p = 1.
    a = {1: {"x": 1, "y": 0, "z": 1}, 2: {"x": 1, "y": 0, "z": 0}}
    b = {1: {"x": 0, "y": 1, "z": 0}, 2: {"x": 1, "y": 1, "z": 1}}
    out = stats.paired_test(a, b, "accuracy")
    assert (out["wins_a"], out["wins_b"], out["p"]) == (1, 1, 1.0)
    # six items all won by a in both seeds: p = 2 · ½⁶
    a = {s: {i: 1 for i in range(6)} for s in (1, 2)}
    b = {s: {i: 0 for i in range(6)} for s in (1, 2)}
    assert stats.paired_test(a, b, "accuracy")["p"] == pytest.approx(2 / 64)


def test_paired_bootstrap_two_items_exact():
    # items (edits a, edits b, length): (1, 0, 1), (0, 0, 1); δ = 0.5. The four equally likely
    # resamples give δ* = 1, 0.5, 0.5, 0: half of them are at least |δ| from δ -> p ≈ ½.
    p, delta = stats.paired_bootstrap([1, 0], [0, 0], [1, 1], samples=20000, seed=3)
    assert delta == 0.5
    assert p == pytest.approx(0.5, abs=0.015)


def test_paired_bootstrap_every_item_favours_one_side():
    # every item: a has one edit more than b on 4 tokens, so every resample gives δ* = δ and
    # none is as far from δ as 0 is: p = 1 / (B + 1)
    p, delta = stats.paired_bootstrap([2] * 8, [1] * 8, [4] * 8, samples=999)
    assert delta == pytest.approx(0.25) and p == pytest.approx(1 / 1000)
    p, delta = stats.paired_bootstrap([3, 1], [3, 1], [5, 5])
    assert (p, delta) == (1.0, 0.0)


def test_paired_test_error_rate_sums_seeds_per_item():
    a = {0: {"u1": [2, 4], "u2": [0, 2]}, 1: {"u1": [1, 4], "u2": [1, 2]}}
    b = {0: {"u1": [1, 4], "u2": [0, 2]}, 1: {"u1": [1, 4], "u2": [0, 2]}}
    out = stats.paired_test(a, b, "error_rate", samples=2000)
    assert out["difference"] == pytest.approx((4 - 2) / 12)  # Σ edits a − Σ edits b over Σ length
    assert out["test"] == "paired_bootstrap" and out["items"] == 2 and out["seeds"] == 2
    assert stats.paired_test(a, b, "error_rate", samples=2000) == out  # seeded: reproducible
    b[0]["u1"] = [1, 5]
    with pytest.raises(SpeechFTError, match="reference length"):
        stats.paired_test(a, b, "error_rate")


def test_paired_test_needs_shared_seeds_and_items():
    with pytest.raises(SpeechFTError, match="share no seed"):
        stats.paired_test({0: {"u": 1}}, {1: {"u": 1}}, "accuracy")
    with pytest.raises(SpeechFTError, match="share no test item"):
        stats.paired_test({0: {"u": 1}}, {0: {"v": 1}}, "accuracy")


def test_resolution_of_an_accuracy_split():
    # 100 items at 50 %: standard error ≈ √(0.25 / 100) = 0.05; 1.96 · √2 · 0.05 ≈ 0.139
    record = {f"u{i}": i % 2 for i in range(100)}
    out = stats.resolution(record, "accuracy", samples=4000)
    assert out["standard_error"] == pytest.approx(0.05, rel=0.08)
    assert out["smallest_difference"] == pytest.approx(1.959964 * math.sqrt(2) * 0.05, rel=0.08)


def test_items_from_s3prl_prediction_files(tmp_path):
    # ctc: "<file> <tokens>"; an empty hypothesis is s3prl's [''] (one substitution or deletion)
    (tmp_path / "test-hyp.ark").write_text("a x y z\nb \nc p q\n")
    (tmp_path / "test-ref.ark").write_text("a x y\nb u v\nc p q\n")
    record = items.collect(tmp_path, "test")
    assert record["kind"] == "error_rate"
    assert record["items"] == {"a": [1, 2], "b": [2, 2], "c": [0, 2]}
    assert items.value(record) == pytest.approx(3 / 6)
    # fluent_commands CSVs: right only when all three slots are; a repeated id is kept
    (tmp_path / "dev_predict.csv").write_text("u1,activate,lights,none\nu2,bring,shoes,none\nu2,x,y,z\n")
    (tmp_path / "dev_truth.csv").write_text("u1,activate,lights,none\nu2,bring,juice,none\nu2,x,y,z\n")
    record = items.collect(tmp_path, "dev")
    assert record["kind"] == "accuracy" and record["items"] == {"u1": 1, "u2": 0, "u2#2": 1}
    # emotion names its files after the fold
    (tmp_path / "test-hyp.ark").unlink()
    (tmp_path / "test_fold1_predict.txt").write_text("s1 neu\ns2 ang\n")
    (tmp_path / "test_fold1_truth.txt").write_text("s1 neu\ns2 sad\n")
    assert items.collect(tmp_path, "test")["items"] == {"s1": 1, "s2": 0}
    with pytest.raises(SpeechFTError, match="no per-item predictions"):
        items.collect(tmp_path, "train")
