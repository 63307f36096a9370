"""The acquisition of the BO samplers: qLogNEHVI over (score, percent objective).

Both objectives are maximised inside BoTorch: the score, and ``-log10(percent)`` or, with
``percent_scale="linear"``, ``-percent`` (`percent_objective`). The log scale (default) makes a
step from 0.1% to 0.05% worth as much as one from 10% to 5%, so the trials spread over the
whole front (the report's plots use a log axis); the linear scale improves the hypervolume
that the report and the benchmarks compute, which is nearly flat in % when all
configurations are far below the reference point (docs/lab-notes/benchmarks-log.md, replay).

The acquisition is qLogNEHVI (log noisy expected hypervolume improvement) with the pending
configurations as ``X_pending``. Its first use in an environment needs BoTorch's fused C++
kernel: `search.kernel` builds it safely, or falls back to BoTorch's pure-PyTorch path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from autopeft.search.kernel import prepare_fused_kernel
from autopeft.space import SpaceGrid

if TYPE_CHECKING:
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.models.model import Model
    from botorch.sampling.base import MCSampler
    from torch import Tensor

__all__ = ["build_acquisition", "known_percent_objective", "percent_objective", "reference_point"]


def percent_objective(percents: np.ndarray, scale: str) -> np.ndarray:
    """The maximised second objective of `percents` (``n``): -log10(percent) ("log") or -percent ("linear")."""
    if scale == "linear":
        return -np.asarray(percents, dtype=np.float64)
    return -np.log10(np.maximum(percents, 1e-12))


def reference_point(
    scores: np.ndarray,
    percents: np.ndarray,
    override: tuple[float, float] | None = None,
    max_percent: float | None = None,
) -> tuple[float, float]:
    """The reference point (score, percent) of the hypervolume the acquisition improves.

    score: the worst observed score minus 10% of the observed range (a zero range counts as
    max(|worst|, 1)). percent: `max_percent`, the space's largest configuration's % (or the
    largest observed, if larger); without it, 1.1 x the largest observed % (the margin lets
    the most expensive observed point still count).

    Args:
        scores: ``n`` observed scores.
        percents: ``n`` observed % trainable parameters.
        override: a user's (score, percent), returned as it is.
        max_percent: the % of the space's largest configuration, when known.
    """
    if override is not None:
        s, p = override
        return float(s), float(p)
    lo, hi = float(scores.min()), float(scores.max())
    spread = hi - lo if hi > lo else max(abs(lo), 1.0)
    largest = float(percents.max())
    return lo - 0.1 * spread, (1.1 * largest if max_percent is None else max(float(max_percent), largest))


def known_percent_objective(
    grid: SpaceGrid, percent_of_row: Callable[[np.ndarray], float], scale: str
) -> Callable[[Tensor], Tensor]:
    """The second objective computed exactly, for a ``GenericDeterministicModel``.

    The returned function maps ``X: batch x q x d`` encoded configurations to
    ``batch x q x 1`` values of `percent_objective`; `percent_of_row` gives the % of one
    `grid` row (each distinct row is asked once per call).
    """

    def objective(X: Tensor) -> Tensor:
        import torch

        flat = X.detach().reshape(-1, X.shape[-1]).cpu().numpy()
        rows = grid.from_x(flat)
        uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
        vals = percent_objective(np.array([percent_of_row(r) for r in uniq], dtype=np.float64), scale)
        out = torch.as_tensor(vals[np.asarray(inverse).reshape(-1)], dtype=X.dtype, device=X.device)
        return out.reshape(*X.shape[:-1], 1)

    return objective


def build_acquisition(
    model: Model,
    sampler: MCSampler,
    ref: np.ndarray,
    X_baseline: Tensor,
    X_pending: Tensor | None,
    prune_baseline: bool = True,
) -> qLogNoisyExpectedHypervolumeImprovement:
    """qLogNEHVI of the two maximised objectives.

    Args:
        model: the two-output model (`search.bo.model.fit_models`).
        sampler: its MC sampler.
        ref: ``2`` reference point in the maximised objectives (score, percent objective).
        X_baseline: ``n x d`` encoded observed configurations (each once).
        X_pending: ``m x d`` encoded pending configurations, or None.
        prune_baseline: drop baseline points unlikely to be on the front.
    """
    import torch
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement

    prepare_fused_kernel()  # never stalls on a lock a killed compile left (search/kernel.py)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=torch.as_tensor(ref, dtype=torch.float64),
            X_baseline=X_baseline,
            sampler=sampler,
            X_pending=X_pending,
            prune_baseline=prune_baseline,
        )
