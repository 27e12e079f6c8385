"""The judge benchmark's statistics on hand-made verdicts (cluster/bench/judge.py)."""

import pytest

from cluster.bench.judge import agreement, auc, calibrate, summarise


def rows(pairs, split="test"):
    return [{"score": s, "correct": c, "split": split, "method": "pinned:m", "kind": "number"} for s, c in pairs]


def test_auc_counts_right_answers_scored_above_wrong_ones_with_ties_half():
    assert auc([0.9, 0.8, 0.2], [True, True, False]) == 1.0
    assert auc([0.5, 0.5], [True, False]) == 0.5
    assert auc([0.1, 0.9], [True, False]) == 0.0
    assert auc([0.4], [True]) is None  # no wrong answer to rank against


def test_agreement_and_kappa_at_a_threshold():
    graded = rows([(0.95, True), (0.9, True), (0.85, False), (0.6, False)])
    everything_right = agreement(graded, 0.5)
    assert everything_right["judged_right"] == 1.0 and everything_right["agreement"] == 0.5 and everything_right["kappa"] == 0.0
    separated = agreement(graded, 0.875)
    assert separated["agreement"] == 1.0 and separated["kappa"] == 1.0


def test_the_threshold_is_calibrated_on_dev_and_reported_on_test():
    dev = rows([(0.95, True), (0.92, True), (0.88, False), (0.7, False)], split="dev")
    test = rows([(0.97, True), (0.86, False), (0.91, True)])
    assert calibrate(dev) == pytest.approx(0.9)
    report = summarise(dev + test, "local", "judge-model", configured=0.5)
    assert report["calibrated_threshold"] == pytest.approx(0.9)
    assert report["test_at_calibrated"]["agreement"] == 1.0
    assert report["test_at_configured"]["agreement"] == pytest.approx(2 / 3, abs=1e-4)
