"""A toy sampler for tests/test_samplers.py: a hill climb from the best configuration so far.
Written as a user would add a sampler: this one module, plus one line that registers it."""

from __future__ import annotations

import numpy as np

from autopeft.search.samplers import ConfigSampler, reject_options
from autopeft.space import rows_not_in


class HillClimbSampler(ConfigSampler):
    """An unseen neighbour (one size a step away, or one or two layers switched) of the best-scoring
    configuration so far; a random unseen configuration before any score, or when none is left."""

    def _propose(self, study, trial, history, rng: np.random.Generator, info: dict) -> np.ndarray:
        seen = history.seen_keys()
        if history.obs_scores:
            best = history.obs_rows[int(np.argmax(history.obs_scores))]
            near = rows_not_in(self._grid.neighbours(best), seen)
            if len(near):
                info["kind"] = "hill climb"
                return near[rng.integers(len(near))]
        info["kind"] = "random"
        return self._random_unseen(rng, seen)


def hill_climb(space, *, seed, n_init, percent_fn, candidates, standards, **options):
    """The factory `register_sampler` takes: the sampler for `space`, or a UserError for an unknown option."""
    options.pop("ref_point", None)  # every sampler accepts the reference point; this one ignores it
    reject_options("hill-climb", options, ())
    return HillClimbSampler(space, seed=seed, candidates=candidates, standards=standards)
