"""Tests for autopeft.metrics against small hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autopeft.metrics import compute_metrics, majority_baseline
from autopeft.tasks import GLUE_TASKS, TaskSpec

RTE, MRPC, STSB, COLA = (GLUE_TASKS[k] for k in ("RTE", "MRPC", "STS-B", "CoLA"))


def test_accuracy_percent():
    m = compute_metrics(RTE, np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]))
    assert m == {"accuracy": 75.0, "score": 75.0}


def test_logits_are_argmaxed():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.0, 5.0]])
    assert compute_metrics(RTE, logits, np.array([0, 1, 0]))["accuracy"] == pytest.approx(200 / 3)


def test_mrpc_f1_and_accuracy():
    # TP=2, FP=1, FN=1, TN=1 -> precision 2/3, recall 2/3, F1 2/3; accuracy 3/5
    preds = np.array([1, 1, 1, 0, 0])
    gold = np.array([1, 1, 0, 1, 0])
    m = compute_metrics(MRPC, preds, gold)
    assert m["f1"] == pytest.approx(200 / 3)
    assert m["accuracy"] == pytest.approx(60.0)
    assert m["score"] == m["f1"]


def test_cola_mcc():
    # TP=2, TN=1, FP=1, FN=1: MCC = (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6
    preds = np.array([1, 1, 1, 0, 0])
    gold = np.array([1, 1, 0, 1, 0])
    m = compute_metrics(COLA, preds, gold)
    assert m["mcc"] == pytest.approx(100 / 6)
    assert m["score"] == m["mcc"] and m["accuracy"] == pytest.approx(60.0)
    assert compute_metrics(COLA, np.ones(4, dtype=int), np.array([1, 0, 1, 0]))["mcc"] == 0.0


def test_stsb_pearson_spearman():
    preds = np.array([1.0, 2.0, 3.0, 4.0])
    gold = np.array([1.0, 2.0, 3.0, 5.0])
    m = compute_metrics(STSB, preds, gold)
    # Pearson by hand: x-mean = (-1.5,-.5,.5,1.5), y-mean = (-1.75,-.75,.25,2.25)
    # cov = 2.625+.375+.125+3.375 = 6.5; sx = sqrt(5); sy = sqrt(8.75)
    assert m["pearson"] == pytest.approx(100 * 6.5 / math.sqrt(5 * 8.75))
    assert m["spearman"] == pytest.approx(100.0)  # same ranks
    assert m["score"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)
    assert m["score"] == m["pearson_spearman"]
    # (n, 1) model outputs are accepted; anti-correlated ranks give -100
    assert compute_metrics(STSB, -preds[:, None], gold)["spearman"] == pytest.approx(-100.0)


def test_constant_regression_predictions_score_zero():
    m = compute_metrics(STSB, np.full(3, 2.5), np.array([1.0, 2.0, 4.0]))
    assert m["pearson"] == m["spearman"] == m["score"] == 0.0


def test_length_mismatch_and_empty():
    with pytest.raises(ValueError):
        compute_metrics(RTE, np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError):
        compute_metrics(RTE, np.array([], dtype=int), np.array([], dtype=int))


def test_majority_baseline():
    train = np.array([1, 1, 0, 1])
    dev = np.array([1, 0, 0, 1, 1])
    m = majority_baseline(MRPC, train, dev)  # always predicts 1: TP=3, FP=2 -> F1 = 6/8
    assert m["accuracy"] == pytest.approx(60.0) and m["f1"] == pytest.approx(75.0)
    three = TaskSpec("t", "classification", ("a", "b", "c"), "accuracy")
    assert majority_baseline(three, np.array([2, 2, 0]), np.array([2, 1]))["score"] == 50.0
    assert majority_baseline(STSB, np.array([1.0, 3.0]), np.array([0.0, 4.0, 2.0]))["score"] == 0.0


@pytest.mark.parametrize("seed", range(20))
def test_metrics_match_scikit_learn_and_scipy(seed):
    from scipy import stats
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    gold, preds = rng.integers(0, 2, n), rng.integers(0, 2, n)
    if seed % 5 == 0:
        preds[:] = seed % 2  # a constant prediction (MCC 0; F1 0 when it is all negatives)
    mrpc, cola = compute_metrics(MRPC, preds, gold), compute_metrics(COLA, preds, gold)
    assert mrpc["accuracy"] == pytest.approx(100 * accuracy_score(gold, preds), abs=1e-9)
    assert mrpc["f1"] == pytest.approx(100 * f1_score(gold, preds, zero_division=0), abs=1e-9)
    assert cola["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, preds), abs=1e-9)

    labels = rng.integers(0, 6, n).astype(float)  # STS-B-like scores with many ties
    scores = np.round(labels + rng.normal(0, 1.5, n), int(seed % 3))
    stsb = compute_metrics(STSB, scores, labels)
    if np.ptp(labels) and np.ptp(scores):
        assert stsb["pearson"] == pytest.approx(100 * stats.pearsonr(scores, labels)[0], abs=1e-9)
        assert stsb["spearman"] == pytest.approx(100 * stats.spearmanr(scores, labels)[0], abs=1e-9)


def test_three_class_mcc_matches_scikit_learn():
    from sklearn.metrics import matthews_corrcoef

    rng = np.random.default_rng(0)
    gold, preds = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    mnli_like = TaskSpec("three", "classification", ("a", "b", "c"), "mcc")
    assert compute_metrics(mnli_like, preds, gold)["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, preds))


def test_correlations_of_non_finite_or_extreme_predictions():
    from scipy import stats

    labels = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    with_nan = compute_metrics(STSB, np.array([0.1, np.nan, 2.2, 2.9, 4.1]), labels)
    assert math.isnan(with_nan["pearson"]) and math.isnan(with_nan["spearman"]) and math.isnan(with_nan["score"])
    for scale in (1e-200, 1e200):
        preds = np.array([0.1, 1.3, 1.9, 3.2, 3.8]) * scale
        expected = 100 * stats.pearsonr(preds, labels)[0]
        assert compute_metrics(STSB, preds, labels)["pearson"] == pytest.approx(expected, abs=1e-9)


def test_mcc_of_labels_that_are_not_class_ids_matches_scikit_learn():
    from sklearn.metrics import matthews_corrcoef

    gold, preds = np.array([-1, 1, 1, -1, 1, -1, 1]), np.array([-1, 1, -1, -1, 1, 1, 1])
    assert compute_metrics(COLA, preds, gold)["mcc"] == pytest.approx(100 * matthews_corrcoef(gold, preds))
