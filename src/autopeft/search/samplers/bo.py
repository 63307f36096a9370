"""The BO samplers ("saasbo", "gp"): one proposal, step by step.

`BayesOptSampler` only orchestrates; the pieces are in `search.bo`:

1. Initial design: the standard modules (`ConfigSampler`), then ``n_init`` uniformly random
   valid configurations (trials counted over the study's trials that did not fail); BO also
   falls back to random while fewer than 2 trials are complete.
2. Replicates: right after the initial design, and then now and again, the proposal may be an
   evaluated configuration to train with a new seed (`BayesOptSampler._replicate`).
3. Observations: the COMPLETE trials, their scores raised to option ``score_floor_quantile``
   (`bo.model.floor_low_scores`), the reference point (`bo.acquisition.reference_point`).
4. Candidates around the front of the configurations' mean scores
   (`bo.discrete_optim.candidate_pool`).
5. Models (`bo.model.fit_models`), qLogNEHVI with the pending trials as ``X_pending``
   (`bo.acquisition.build_acquisition`), maximised over the candidates and a hill climb
   (`bo.discrete_optim.optimize_acqf_discrete_local`).

A proposal runs with ``num_threads`` torch and BLAS threads (`search.environment.thread_limit`),
inside ``torch.random.fork_rng`` with torch's RNG, the NUTS seed and the MC base samples all
derived from ``(seed, trial.number)``: a given seed gives the same proposals on CPU. A failed
fit does not end a search: the proposal is then random, with a warning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autopeft.errors import UserError
from autopeft.log import get_logger
from autopeft.search.attrs import BUDGET_ATTR
from autopeft.search.bo import acquisition, discrete_optim, model
from autopeft.search.environment import thread_limit
from autopeft.search.pareto import pareto_mask
from autopeft.search.samplers.base import ConfigSampler, History
from autopeft.search.samplers.options import DEFAULT_N_INIT, BOOptions
from autopeft.space import PeftConfig, SearchSpace, row_key, unique_rows

logger = get_logger(__name__)

__all__ = ["BayesOptSampler"]


class BayesOptSampler(ConfigSampler):
    """SAAS-GP (or standard GP) + qLogNEHVI over a discrete PEFT space.

    Args:
        space: every proposal is a valid configuration of it.
        options: the model, acquisition and replicate options (`BOOptions`; default: its defaults).
        seed: seeds every proposal (None: a random seed).
        n_init: the initial random trials (after the standard modules).
        percent_fn: analytic % trainable parameters of a configuration; the second objective is
            then known exactly instead of modelled.
        candidates: restrict every proposal to these configurations (a tabular benchmark).
        standards: the standard modules, proposed first.
    """

    def __init__(
        self,
        space: SearchSpace,
        options: BOOptions | None = None,
        *,
        seed: int | None = None,
        n_init: int = DEFAULT_N_INIT,
        percent_fn: Callable[[PeftConfig], float] | None = None,
        candidates: Sequence[PeftConfig] | None = None,
        standards: Sequence[PeftConfig] = (),
    ) -> None:
        super().__init__(space, seed=seed, candidates=candidates, standards=standards)
        self.options = options or BOOptions()
        self.n_init = int(n_init)
        self.percent_fn = percent_fn
        self._percent_cache: dict[bytes, float] = {}

    # --- proposal -------------------------------------------------------------------
    def _propose(
        self, study: optuna.Study, trial: FrozenTrial, history: History, rng: np.random.Generator, info: dict
    ) -> np.ndarray:
        _check_directions(study)
        seen = history.seen_keys()
        info.update(n_observations=len(history.obs_rows), n_pending=len(history.pending_rows))
        if history.n_started < self.n_standards + self.n_init or len(history.obs_rows) < 2:
            info["kind"] = "random (initial design)"
            return self._random_unseen(rng, seen)
        if (replicate := self._replicate(history, study.user_attrs.get(BUDGET_ATTR))) is not None:
            entry, kind = replicate
            info["kind"] = kind
            info["replicate"] = {"of": int(entry["first"]), "index": int(entry["n"])}
            return entry["row"]
        torch_seed = int(rng.integers(2**31 - 1))
        try:
            import torch

            with torch.random.fork_rng(devices=[]), thread_limit(self.options.num_threads):
                torch.manual_seed(torch_seed)
                row = self._bo_step(history, seen, rng, torch_seed, info)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed fit must not end a long search
            logger.warning(f"BO proposal failed ({type(exc).__name__}: {exc}); proposing a random configuration")
            info["kind"] = f"random (BO failed: {type(exc).__name__})"
            row = None
        if row is None:
            row = self._random_unseen(rng, seen)
        return row

    def _bo_step(
        self, history: History, seen: set[bytes], rng: np.random.Generator, torch_seed: int, info: dict
    ) -> np.ndarray | None:
        """The row (``d``) maximising qLogNEHVI; None when there is too little to model or nothing to propose."""
        import torch

        opts, grid = self.options, self._grid
        observed = self._observations(history)
        if observed is None:
            return None
        obs, scores, percents = observed  # n x d, n, n
        scores = model.floor_low_scores(scores, opts.score_floor_quantile)
        max_percent = None
        if opts.ref_point is None and self.percent_fn is not None:
            max_percent = float(self.percent_fn(self.space.max_config()))
        ref_score, ref_percent = acquisition.reference_point(scores, percents, opts.ref_point, max_percent)
        info["ref_point"] = (ref_score, ref_percent)
        ref = np.array([ref_score, float(self._percent_objective(np.array([ref_percent]))[0])])

        # Candidates around the front of the configurations' mean scores.
        index_of: dict[bytes, int] = {}
        inverse = np.array([index_of.setdefault(row_key(r), len(index_of)) for r in obs])
        uniq = unique_rows(obs)  # in order of first appearance, as index_of
        mean_scores = np.bincount(inverse, weights=scores) / np.bincount(inverse)
        uniq_percents = np.zeros(len(uniq))
        uniq_percents[inverse] = percents
        pool = discrete_optim.candidate_pool(
            grid, uniq, mean_scores, uniq_percents, seen, rng,
            n_random=opts.n_random_candidates, max_local=opts.max_local_candidates, candidates=self._candidates,
        )
        info["n_candidates"] = int(len(pool))
        if len(pool) == 0:
            return None

        t0 = time.perf_counter()
        X = torch.as_tensor(grid.to_x(obs), dtype=torch.float64)
        if self.percent_fn is not None:
            known = acquisition.known_percent_objective(grid, self._percent, opts.percent_scale)
            models, sampler = model.fit_models(X, scores, None, opts, torch_seed, known_percent=known)
        else:
            models, sampler = model.fit_models(X, scores, self._percent_objective(percents), opts, torch_seed)
        info["fit_seconds"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        pending = history.pending_rows
        X_pending = torch.as_tensor(grid.to_x(np.stack(pending)), dtype=torch.float64) if pending else None
        X_baseline = torch.as_tensor(grid.to_x(uniq), dtype=torch.float64)
        acq = acquisition.build_acquisition(models, sampler, ref, X_baseline, X_pending, opts.prune_baseline)
        evaluated, values = discrete_optim.optimize_acqf_discrete_local(
            acq, grid, pool, seen, rng,
            climb_rounds=opts.climb_rounds if self._candidates is None else 0,  # candidates: the pool is all of them
            climb_top_k=opts.climb_top_k, max_local=opts.max_local_candidates, max_batch_size=opts.max_batch_size,
        )
        info["acq_seconds"] = time.perf_counter() - t1
        info["n_evaluated"] = int(len(evaluated))
        best = int(np.argmax(values))
        info["acq_value"] = float(values[best])
        info["kind"] = "bo"
        return evaluated[best]

    def _observations(self, history: History) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Evaluated rows ``n x d``, scores ``n`` and percents ``n``; None with fewer than 2 percents known."""
        obs = np.stack(history.obs_rows)
        scores = np.asarray(history.obs_scores, dtype=np.float64)
        if self.percent_fn is not None:
            return obs, scores, np.array([self._percent(r) for r in obs])
        keep = np.array([p is not None for p in history.obs_percents])
        if keep.sum() < 2:
            return None
        percents = np.array([p for p in history.obs_percents if p is not None], dtype=np.float64)
        return obs[keep], scores[keep], percents

    def _percent_objective(self, percents: np.ndarray) -> np.ndarray:
        """The maximised second objective of `percents` (option ``percent_scale``)."""
        return acquisition.percent_objective(percents, self.options.percent_scale)

    def _percent(self, row: np.ndarray) -> float:
        """``percent_fn`` of a row's configuration, cached."""
        key = row_key(row)
        value = self._percent_cache.get(key)
        if value is None:
            value = float(self.percent_fn(self._grid.config(row)))  # type: ignore[misc]
            if not math.isfinite(value):
                raise UserError(f"percent_fn returned {value} for {self._grid.config(row).describe()}")
            self._percent_cache[key] = value
        return value

    # --- replicates -----------------------------------------------------------------
    def _replicate(self, history: History, budget: int | None) -> tuple[dict[str, Any], str] | None:
        """The configuration to train again with a new seed, and why; None: propose a new one.

        Rule: right after the initial design, ``calibration_pairs`` replicates measure the seed
        noise: of the configurations with one seed, those with the smallest % parameters (the
        cheapest to train again; ties: the earliest). Replicates (evaluated or pending) are at
        most max(``calibration_pairs``, ``replicates`` x the study's budget), the budget being
        its user attr BUDGET_ATTR, set by the search loop, and no configuration gets more
        than ``max_seeds`` seeds. After the calibration, a replicate is made
        while replicates stay at most ``replicates`` x (trials so far, this one included), so
        they spread over the search: the member of the front of means whose mean has the
        largest standard error, i.e. the fewest seeds (ties: the higher mean), so that the
        reported front is the part measured best. ``replicates=0``: calibration only; with
        ``calibration_pairs=0`` as well, no replicates.
        """
        fraction = self.options.replicates
        pairs = self.options.calibration_pairs
        cap = max(pairs, math.floor(fraction * budget + 1e-9)) if isinstance(budget, int) else math.inf
        if history.n_replicates + 1 > cap:
            return None
        configs = list(history.configurations().values())
        if self.percent_fn is not None:
            percents = [self._percent(c["row"]) for c in configs]
        else:
            configs = [c for c in configs if c["percent"] is not None]
            percents = [c["percent"] for c in configs]
        if not configs:
            return None
        if sum(c["n"] >= 2 for c in configs) < pairs:
            single = [(p, c["first"], i) for i, (c, p) in enumerate(zip(configs, percents)) if c["n"] == 1]
            return (configs[min(single)[2]], "replicate (noise calibration)") if single else None
        if fraction <= 0 or history.n_replicates + 1 > fraction * (history.n_started + 1):
            return None
        means = np.array([np.mean(c["scores"]) for c in configs])
        front = [(c, m) for c, m, on in zip(configs, means, pareto_mask(means, percents)) if on]
        open_ = [(c, m) for c, m in front if c["n"] < self.options.max_seeds]
        if not open_:
            return None
        best = min(open_, key=lambda cm: (cm[0]["n"], -cm[1], cm[0]["first"]))
        return best[0], "replicate (front member with the largest standard error)"


def _check_directions(study: optuna.Study) -> None:
    want = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    if list(study.directions) != want:
        raise UserError(
            "the BO samplers need a study with directions ['maximize', 'minimize'] and values "
            f"(score, percent); this study has {[d.name.lower() for d in study.directions]}"
        )
