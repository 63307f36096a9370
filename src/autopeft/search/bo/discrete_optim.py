"""Maximising the acquisition over the discrete space: a candidate pool, then a hill climb.

The pool (`candidate_pool`) is made of (a) the neighbours of every observed Pareto-optimal
configuration (one size index +-1, or one or two layer bits flipped; at most
``max_local_candidates``, sub-sampled) and (b) ``n_random_candidates`` random valid
configurations, or the whole space when it has no more valid configurations than these two
budgets together. `optimize_acqf_discrete_local` scores the pool in chunks of
``max_batch_size`` (`evaluate`), then runs ``climb_rounds`` rounds of hill climbing from the
``climb_top_k`` best candidates (their unevaluated neighbours). The best candidate wins.

Configurations are `SpaceGrid` rows (``n x d`` int64 arrays); `seen` holds the `row_key` of
every configuration that must not be proposed (evaluated, pending or failed).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from autopeft.search.pareto import pareto_mask
from autopeft.space import SpaceGrid, row_key, rows_not_in, unique_rows

if TYPE_CHECKING:
    from botorch.acquisition import AcquisitionFunction

__all__ = ["candidate_pool", "evaluate", "optimize_acqf_discrete_local"]


def candidate_pool(
    grid: SpaceGrid,
    observed: np.ndarray,
    scores: np.ndarray,
    percents: np.ndarray,
    seen: set[bytes],
    rng: np.random.Generator,
    *,
    n_random: int,
    max_local: int,
    candidates: np.ndarray | None = None,
) -> np.ndarray:
    """The unseen configurations to score first: ``m x d`` rows (possibly ``m = 0``).

    Args:
        grid: the space.
        observed: ``n x d`` observed configurations, each once.
        scores: ``n`` their (mean) scores.
        percents: ``n`` their % trainable parameters.
        seen: keys of the configurations left out.
        rng: draws the random candidates and sub-samples the neighbours.
        n_random: random valid configurations in the pool.
        max_local: at most this many neighbours of the front.
        candidates: ``c x d`` rows the proposals are restricted to (a tabular benchmark): the
            pool is then every unseen one.
    """
    if candidates is not None:
        return rows_not_in(candidates, seen)
    if grid.n_points() <= max(n_random + max_local, 1):
        return rows_not_in(grid.enumerate_valid(), seen)
    front = observed[pareto_mask(scores, percents)]
    local = rows_not_in(grid.neighbours(front), seen)
    if len(local) > max_local:
        local = local[np.sort(rng.choice(len(local), max_local, replace=False))]
    random_rows = rows_not_in(grid.random(rng, n_random), seen) if n_random else np.zeros((0, grid.d), dtype=np.int64)
    pool = unique_rows(np.concatenate([local, random_rows]))
    if len(pool) == 0:  # everything nearby was tried: look further
        pool = rows_not_in(unique_rows(grid.random(rng, 4096)), seen)
    return pool


def evaluate(acq: AcquisitionFunction, grid: SpaceGrid, rows: np.ndarray, max_batch_size: int) -> np.ndarray:
    """Acquisition values of `rows` (``m x d``), each as a q = 1 batch: ``m`` floats, NaN as -inf."""
    import torch

    X = torch.as_tensor(grid.to_x(rows), dtype=torch.float64)
    out = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")
        for chunk in X.split(max_batch_size):
            out.append(acq(chunk.unsqueeze(-2)))
    values = torch.cat(out).reshape(-1).numpy().astype(np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def optimize_acqf_discrete_local(
    acq: AcquisitionFunction,
    grid: SpaceGrid,
    pool: np.ndarray,
    seen: set[bytes],
    rng: np.random.Generator,
    *,
    climb_rounds: int,
    climb_top_k: int,
    max_local: int,
    max_batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Score `pool` (``m x d``, not empty), then hill climb from its best rows.

    Each round scores the unseen, unevaluated neighbours of the `climb_top_k` best rows so far
    (at most `max_local`, sub-sampled with `rng`); it stops early when there are none.

    Returns:
        ``k x d`` every evaluated row (the pool first) and ``k`` their acquisition values.
    """
    evaluated = pool
    values = evaluate(acq, grid, pool, max_batch_size)
    evaluated_keys = {row_key(r) for r in pool}
    for _ in range(climb_rounds):
        top = evaluated[np.argsort(-values, kind="stable")[:climb_top_k]]
        nbrs = rows_not_in(grid.neighbours(top), seen | evaluated_keys)
        if len(nbrs) > max_local > 0:
            nbrs = nbrs[np.sort(rng.choice(len(nbrs), max_local, replace=False))]
        if len(nbrs) == 0:
            break
        evaluated = np.concatenate([evaluated, nbrs])
        values = np.concatenate([values, evaluate(acq, grid, nbrs, max_batch_size)])
        evaluated_keys |= {row_key(r) for r in nbrs}
    return evaluated, values
