"""GLUE-style evaluation metrics, in percent (x100) as GLUE papers report them.

The five metrics are computed here with numpy rather than through scikit-learn and
scipy.stats: importing those two costs every command (and every worker) almost a second of
start-up before its first trial, for five textbook formulas. tests/test_metrics.py checks
each against scikit-learn's and SciPy's on random data with ties and edge cases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from autopeft.tasks import TaskSpec


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `x` (n,), ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    new_value = np.r_[True, ordered[1:] != ordered[:-1]]  # (n,): starts a run of equal values
    group = np.cumsum(new_value) - 1  # (n,): the run of each sorted position
    starts = np.flatnonzero(np.r_[new_value, True])  # (groups + 1,)
    average = (starts[:-1] + starts[1:] - 1) / 2 + 1  # (groups,): mean of ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = average[group]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    x, y = x / np.abs(x).max(), y / np.abs(y).max()  # in [-1, 1]: tiny or huge values neither under- nor overflow
    return float(np.clip(x @ y / np.sqrt((x @ x) * (y @ y)), -1.0, 1.0))


def _correlation(x: np.ndarray, y: np.ndarray, rank: bool) -> float:
    """Pearson's (or, with `rank`, Spearman's) correlation of (n,) arrays; 0 where it is
    undefined, i.e. when either side is constant (e.g. the mean baseline); NaN when a value is
    not finite."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return _pearson(_average_ranks(x), _average_ranks(y)) if rank else _pearson(x, y)


def _f1(gold: np.ndarray, preds: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of class `positive`; 0 when there is no positive in either (zero_division=0)."""
    tp = np.sum((preds == positive) & (gold == positive))
    wrong = np.sum((preds == positive) != (gold == positive))  # false positives + false negatives
    return float(2 * tp / (2 * tp + wrong)) if tp + wrong else 0.0


def _mcc(gold: np.ndarray, preds: np.ndarray) -> float:
    """Matthews correlation (multiclass form, as sklearn's); 0 when either side is constant."""
    classes, codes = np.unique(np.r_[gold, preds], return_inverse=True)  # any label values -> 0..k-1
    n_classes, gold, preds = len(classes), codes[: len(gold)], codes[len(gold):]
    confusion = np.bincount(gold * n_classes + preds, minlength=n_classes**2).reshape(n_classes, n_classes)
    true, predicted = confusion.sum(axis=1).astype(np.float64), confusion.sum(axis=0).astype(np.float64)
    correct, n = float(np.trace(confusion)), float(confusion.sum())
    cov_tp = correct * n - true @ predicted
    cov_pp, cov_tt = n * n - predicted @ predicted, n * n - true @ true
    return float(cov_tp / np.sqrt(cov_tt * cov_pp)) if cov_tt * cov_pp else 0.0


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Score predictions against gold labels, all values in percent.

    Classification: ``predictions`` are class ids, or logits of shape (n, num_labels)
    (argmax is taken). Keys: ``accuracy``, plus ``f1`` (binary, class id 1 positive)
    or ``mcc`` (Matthews correlation) when that is the task's primary metric
    (MRPC: f1 + accuracy; CoLA: mcc + accuracy).

    Regression: keys ``pearson``, ``spearman`` and ``pearson_spearman`` (their mean).
    A correlation is 0 when predictions or labels are constant.

    ``score`` is always present and equals the task's primary metric: accuracy for
    RTE / SST-2 / WNLI, f1 for MRPC, mcc for CoLA, and for STS-B the mean of Pearson
    and Spearman (GLUE itself lists both; the mean gives one number to optimise).
    """
    preds = np.asarray(predictions)
    gold = np.asarray(labels)
    if task.kind == "regression":
        preds = preds.reshape(len(preds), -1)[:, 0] if preds.ndim == 2 else preds
        preds, gold = preds.astype(np.float64).ravel(), gold.astype(np.float64).ravel()
    elif preds.ndim == 2:
        preds = preds.argmax(axis=-1)
    if len(preds) != len(gold):
        raise ValueError(f"{len(preds)} predictions for {len(gold)} labels")
    if len(gold) == 0:
        raise ValueError("no predictions to score")

    out: dict[str, float] = {}
    if task.kind == "regression":
        out["pearson"] = 100.0 * _correlation(preds, gold, rank=False)
        out["spearman"] = 100.0 * _correlation(preds, gold, rank=True)
        out["pearson_spearman"] = (out["pearson"] + out["spearman"]) / 2
    else:
        preds, gold = preds.astype(np.int64), gold.astype(np.int64)
        out["accuracy"] = 100.0 * float(np.mean(gold == preds))
        if task.primary_metric == "f1":
            out["f1"] = 100.0 * _f1(gold, preds)
        elif task.primary_metric == "mcc":
            out["mcc"] = 100.0 * _mcc(gold, preds)
    out["score"] = out[task.primary_metric]
    return out


def majority_baseline(task: TaskSpec, train_labels: np.ndarray, dev_labels: np.ndarray) -> dict[str, float]:
    """Metrics on dev of a constant predictor: the most frequent train class (ties: the
    lowest class id), or the train mean for regression (whose correlations are 0)."""
    train = np.asarray(train_labels)
    if len(train) == 0:
        raise ValueError("no train labels")
    if task.kind == "regression":
        constant: float = float(train.astype(np.float64).mean())
    else:
        constant = int(np.bincount(train.astype(np.int64), minlength=task.num_labels).argmax())
    return compute_metrics(task, np.full(len(dev_labels), constant), np.asarray(dev_labels))
