"""Optuna's own samplers ("nsga2", "motpe"), made to propose valid configurations only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from optuna.samplers import BaseSampler

from autopeft.search.samplers.base import ConfigSampler
from autopeft.space import PeftConfig, SearchSpace

__all__ = ["ValidatingSampler"]


class ValidatingSampler(ConfigSampler):
    """Wraps an Optuna sampler so that every proposal is a valid configuration.

    The wrapper takes the whole space as its relative search space. In `sample_relative`
    it asks the wrapped sampler exactly as Optuna would (its own relative search space and
    `sample_relative`, then `sample_independent` for the remaining parameters in the
    driver's order), and repairs the result if it is invalid: with no module on, one
    searched size key that allows a positive size (chosen uniformly) gets a uniformly
    random positive size; with no layer on, one searched layer (chosen uniformly) is
    switched on. No trial is wasted; the (small) bias is extra mass on configurations
    with exactly one module or exactly one layer on, spread evenly over modules/layers
    instead of always landing on the last one. The delegate's `before_trial` and
    `after_trial` hooks run as usual (NSGA-II's generation bookkeeping lives there).
    """

    def __init__(
        self, delegate: BaseSampler, space: SearchSpace, *, seed: int | None = None,
        candidates: Sequence[PeftConfig] | None = None, standards: Sequence[PeftConfig] = (),
    ) -> None:
        super().__init__(space, seed=seed, candidates=candidates, standards=standards)
        self.delegate = delegate

    def __str__(self) -> str:
        return f"Valid{self.delegate}"

    def before_trial(self, study, trial) -> None:
        self.delegate.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self.delegate.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        super().reseed_rng()
        self.delegate.reseed_rng()

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.delegate.sample_independent(study, trial, param_name, param_distribution)

    def _propose(self, study, trial, history, rng, info):
        grid = self._grid
        relative_space = self.delegate.infer_relative_search_space(study, trial)
        relative_space = {k: v for k, v in relative_space.items() if k in self._distributions}
        params = dict(self.delegate.sample_relative(study, trial, relative_space)) if relative_space else {}
        for name, dist in self._distributions.items():
            if name not in params:
                params[name] = self.delegate.sample_independent(study, trial, name, dist)
        row = np.array(
            [list(getattr(self.space, n)).index(params[n]) if j < grid.n_sizes else int(params[n])
             for j, n in enumerate(grid.names)],
            dtype=np.int64,
        )
        info["kind"] = str(self.delegate)
        repaired = self._repair(row, rng)
        info["repaired"] = bool((repaired != row).any())
        return repaired

    def _repair(self, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        grid = self._grid
        row = row.copy()
        if not grid.valid(row)[0]:
            modules_on = grid.fixed_module_on or any(
                grid.size_positive[j][row[j]] for j in range(grid.n_sizes)
            )
            if not modules_on:
                keys = [j for j in range(grid.n_sizes) if grid.size_positive[j].any()]
                j = keys[int(rng.integers(len(keys)))]
                positive = np.flatnonzero(grid.size_positive[j])
                row[j] = positive[int(rng.integers(len(positive)))]
            if not grid.fixed_layer_on and not row[grid.n_sizes:].any():
                row[grid.n_sizes + int(rng.integers(grid.d - grid.n_sizes))] = 1
        return row
