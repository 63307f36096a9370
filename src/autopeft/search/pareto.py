"""Pareto front and hypervolume for the two AutoPEFT objectives.

Objectives: maximise the task score, minimise the % of trainable parameters.
All functions take two parallel 1-D arrays (`scores`, `percents`); non-finite
points are never on the front and contribute no hypervolume.

Reference point (one rule, used by the search progress, the reports and the
benchmarks; see `default_reference_point`):
- score: the task's majority-class baseline when known, else 0. Every metric
  used here is on a [0, 100] scale (accuracy, F1) or is 0 at chance level
  (MCC, Pearson/Spearman x 100), so 0 means "no better than a trivial model";
- percent: the largest % trainable parameters any configuration of the space
  can have (`space_max_percent`), an analytic upper bound, so every valid
  configuration lies inside the reference box in the percent direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from autopeft.space import ModelSpec, SearchSpace

ArrayLike = Sequence[float] | np.ndarray
T = TypeVar("T")


def _as_arrays(scores: ArrayLike, percents: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    p = np.asarray(percents, dtype=np.float64).reshape(-1)
    if s.shape != p.shape:
        raise ValueError(f"scores and percents differ in length: {s.size} vs {p.size}")
    return s, p


def pareto_mask(scores: ArrayLike, percents: ArrayLike) -> np.ndarray:
    """Boolean mask (shape (n,)) of the non-dominated points.

    A point is dominated when another has a score >= and a percent <=, with at
    least one strict. Identical points do not dominate each other, so all copies
    of a non-dominated point are kept. Non-finite points are masked out.
    """
    s, p = _as_arrays(scores, percents)
    mask = np.zeros(s.size, dtype=bool)
    finite = np.flatnonzero(np.isfinite(s) & np.isfinite(p))
    # Sweep by percent ascending (score descending within a percent level).
    order = finite[np.lexsort((-s[finite], p[finite]))]
    best_lower = -np.inf  # best score among strictly smaller percents
    i = 0
    while i < order.size:
        level = p[order[i]]
        j = i
        while j < order.size and p[order[j]] == level:
            j += 1
        group = order[i:j]
        top = s[group[0]]
        if top > best_lower:
            mask[group[s[group] == top]] = True
            best_lower = top
        i = j
    return mask


def hypervolume(scores: ArrayLike, percents: ArrayLike, ref_score: float, ref_percent: float) -> float:
    """Area dominated by the points and bounded by (ref_score, ref_percent).

    Exact 2-D sweep. Points with score <= ref_score or percent >= ref_percent
    (worse than the reference) contribute nothing.
    """
    s, p = _as_arrays(scores, percents)
    keep = np.isfinite(s) & np.isfinite(p) & (s > ref_score) & (p < ref_percent)
    s, p = s[keep], p[keep]
    if s.size == 0:
        return 0.0
    order = np.lexsort((-s, p))
    s, p = s[order], p[order]
    # Scanning by percent, each new best score adds a slab of width ref_percent - p.
    best = np.maximum.accumulate(np.concatenate([[ref_score], s]))
    return float(np.sum(np.diff(best) * (ref_percent - p)))


def hypervolume_history(
    scores: ArrayLike, percents: ArrayLike, ref_score: float, ref_percent: float
) -> np.ndarray:
    """Hypervolume of the first k points, for k = 1..n (points in trial order)."""
    s, p = _as_arrays(scores, percents)
    return np.array([hypervolume(s[: k + 1], p[: k + 1], ref_score, ref_percent) for k in range(s.size)])


def default_reference_point(max_percent: float, baseline_score: float | None = None) -> tuple[float, float]:
    """The documented reference point (ref_score, ref_percent).

    `max_percent`: the space's largest % trainable parameters (`space_max_percent`).
    `baseline_score`: the task's majority-class score on the same scale as the
    metric, if known; otherwise 0 (chance level / lower bound of the metrics used).
    """
    if not np.isfinite(max_percent) or max_percent <= 0:
        raise ValueError(f"max_percent must be a positive number, got {max_percent!r}")
    return (0.0 if baseline_score is None else float(baseline_score), float(max_percent))


def space_max_percent(space: SearchSpace, spec: ModelSpec) -> float:
    """Analytic upper bound of % trainable parameters over the space (`SearchSpace.max_config`)."""
    return spec.percent(space.max_config())


def pareto_ranks(scores: ArrayLike, percents: ArrayLike) -> np.ndarray:
    """Non-dominated sorting (as in NSGA-II): rank 0 for the front, 1 for the front of the rest, ...

    Returns int ranks of shape (n,); non-finite points get rank n.
    """
    s, p = _as_arrays(scores, percents)
    ranks = np.full(s.size, s.size, dtype=np.int64)
    left = np.isfinite(s) & np.isfinite(p)
    rank = 0
    while left.any():
        idx = np.flatnonzero(left)
        on = idx[pareto_mask(s[idx], p[idx])]
        ranks[on] = rank
        left[on] = False
        rank += 1
    return ranks


def spread_along_front(rows: Sequence[T], k: int) -> list[T]:
    """K rows evenly spaced (by rank) along a front sorted by percent, both ends included; k<=0: all."""
    if k <= 0 or k >= len(rows):
        return list(rows)
    picks = sorted({int(round(i)) for i in np.linspace(0, len(rows) - 1, k)})
    return [rows[i] for i in picks]
