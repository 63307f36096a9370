"""GLUE-style evaluation metrics, in percent (x100) as GLUE papers report them."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

if TYPE_CHECKING:
    from autopeft.tasks import TaskSpec


def _correlation(fn, x: np.ndarray, y: np.ndarray) -> float:
    # Undefined when either side is constant (e.g. the mean baseline): report 0.
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(x, y)[0])


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
        out["pearson"] = 100.0 * _correlation(stats.pearsonr, preds, gold)
        out["spearman"] = 100.0 * _correlation(stats.spearmanr, preds, gold)
        out["pearson_spearman"] = (out["pearson"] + out["spearman"]) / 2
    else:
        preds, gold = preds.astype(np.int64), gold.astype(np.int64)
        out["accuracy"] = 100.0 * float(accuracy_score(gold, preds))
        if task.primary_metric == "f1":
            out["f1"] = 100.0 * float(f1_score(gold, preds, pos_label=1, average="binary", zero_division=0))
        elif task.primary_metric == "mcc":
            out["mcc"] = 100.0 * float(matthews_corrcoef(gold, preds))
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
