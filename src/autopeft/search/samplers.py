"""Every search strategy behind one interface: Optuna samplers over a `SearchSpace`.

`make_sampler(name, space, ...)` returns an `optuna.samplers.BaseSampler` for a study
with directions ``["maximize", "minimize"]`` whose trial values are ``(score, percent)``.
The study driver asks a trial, calls ``trial.suggest_categorical(name, choices)`` for
every entry of ``space.optuna_distributions()`` in that order, and builds the
configuration with ``space.from_params(trial.params)``. Whatever the sampler, that
configuration is always valid and inside the space (``space.contains(config)``).

Samplers
--------
``"saasbo"`` (default)
    Multi-objective Bayesian optimisation as in AutoPEFT (Zhou et al., TACL 2024): the
    dev score is modelled by a SAAS Gaussian process (sparse axis-aligned subspace prior),
    by default its MAP estimate (``fit="map"``, BoTorch's ``get_fitted_map_saas_model``),
    or fully Bayesian with NUTS (``fit="nuts"``, ``SaasFullyBayesianSingleTaskGP``) as in
    the paper; the acquisition is qLogNEHVI (log noisy expected hypervolume improvement).
    MAP is the default because a NUTS proposal costs a large share of a low-fidelity trial
    on a CPU, and NUTS did not search better in the SST-2 table replay (the figures are in
    docs/lab-notes/benchmarks-log.md, "Sampler overhead").
``"gp"``
    The same with a standard ``SingleTaskGP`` (Matern-5/2 ARD, fitted by marginal
    likelihood).
``"random"``
    Uniformly random valid configurations (never one already tried, while any is left).
``"nsga2"`` / ``"motpe"``
    Optuna's ``NSGAIISampler`` / multivariate ``TPESampler``, wrapped so that they only
    produce valid configurations (see `ValidatingSampler`).

Design of the BO samplers (`BayesOptSampler`)
---------------------------------------------
* Whole configurations at once: the relative search space is the whole space and
  ``sample_relative`` returns every parameter.
* Initial design: the first ``n_init`` trials (counted over the study's trials that
  did not fail) are uniformly random valid configurations; BO also falls back to random
  while fewer than 2 trials are complete.
* Objectives (both maximised inside BoTorch): ``score`` (standardised by the GP's
  outcome transform) and ``-log10(percent)``, or ``-percent`` with option
  ``percent_scale="linear"``. The log scale (default) makes a step from 0.1% to 0.05%
  worth as much as one from 10% to 5%, so the trials spread over the whole front (the
  report's plots use a log axis); the linear scale improves the hypervolume the report
  and the benchmarks compute, which is nearly flat in % when all configurations are far
  below the reference point (docs/lab-notes/benchmarks-log.md: replay). When
  ``percent_fn`` is given the second objective is known exactly and is modelled by a
  ``GenericDeterministicModel`` next to the score GP in a ``ModelList`` (the MC sampler is a ``ListSampler`` of a Sobol
  normal sampler and an ``IndexSampler``); this works with the fully Bayesian SAAS model
  (``PosteriorList`` broadcasts the deterministic values over the MCMC dimension) and
  halves the NUTS cost. Without ``percent_fn`` a second GP of the same kind is fitted to
  ``log10(percent)`` of the observed trials. Option ``score_floor_quantile=q`` raises the
  scores below their q-quantile to it before the fit (`floor_low_scores`): on the SST-2
  table it made the GP rank the unseen configurations much better, but the replayed
  hypervolume did not change, so it is off by default (docs/lab-notes/benchmarks-log.md).
* Reference point (option ``ref_point=(score, percent)`` overrides it): score = worst
  observed score minus 10% of the observed score range (range 0 -> max(|worst|, 1));
  percent = the largest percent of the space, ``percent_fn`` of the configuration with
  every size at its maximum and every searchable layer on (or the largest observed, if
  larger); without ``percent_fn``, 1.1 x the largest observed percent (the margin lets
  the most expensive observed point still count).
* Pending points: configurations of the study's RUNNING (and WAITING, i.e. enqueued)
  trials other than the current one are passed as ``X_pending``, so q > 1 works by
  sequential greedy asks and concurrent workers do not duplicate work. A trial's whole
  proposal is stored in its system attribute ``"autopeft_proposal"`` as soon as it is
  made, so a pending trial counts even before all its parameters are suggested.
* No duplicates: configurations of COMPLETE, pending and FAIL trials are removed from the
  candidates (a failed configuration is not retried). Only when the whole space has
  been tried does a sampler repeat a configuration (with a warning). A FAIL trial that
  a later trial re-runs (user attr ``rerun_of``: a stale or interrupted trial, queued
  again) is not a failed configuration and is left out of the history.
* Acquisition optimisation over the discrete space: a candidate pool made of (a) the
  neighbours of every observed Pareto-optimal configuration (one size index +-1, or one
  or two layer bits flipped; at most ``max_local_candidates``, sub-sampled) and (b)
  ``n_random_candidates`` random valid configurations -- or the whole space when it has
  no more valid configurations than these two budgets together; evaluated in chunks of
  ``max_batch_size``; then ``climb_rounds`` rounds of hill climbing from the
  ``climb_top_k`` best candidates (their unevaluated neighbours). The best candidate
  wins. ``mc_samples`` (default 32) Sobol quasi-MC samples.
* NUTS defaults ``warmup_steps=256, num_samples=128, thinning=16`` (8 MCMC samples,
  ``max_tree_depth=6``): see `NUTS_DEFAULTS` and ``benchmarks/sampler_overhead.py``
  for the measured proposal times that justify them.
* Threads: a proposal runs with one torch thread and one BLAS thread (option
  ``num_threads``), restored afterwards. The matrices are small, and with 2 threads
  on a busy 2-core machine each small BLAS/LAPACK call waits for its helper thread's
  time slice, which made NUTS gradients and MAP fits several times slower.
* Determinism: every random choice of a proposal (random design, candidate sub-sampling,
  NUTS seed, MC base samples, torch's global RNG inside a ``fork_rng`` block) derives
  from ``(seed, trial.number)``, so a given seed gives the same proposals on CPU, also
  when a study is resumed with a fresh sampler.
* Timing: ``sampler.last_proposal_seconds`` (and ``sampler.last_proposal``, a dict with
  the details) hold the duration of the latest proposal; the same number is stored on
  the trial as system attribute ``"autopeft_proposal_seconds"``.
* The first qLogNEHVI in an environment needs BoTorch's fused C++ kernel: `search.kernel`
  builds it safely (set-up builds it once), or falls back to BoTorch's pure-PyTorch path.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import UserError
from autopeft.search import optuna_access
from autopeft.search.attrs import (
    BUDGET_ATTR,
    DUPLICATE_OF_ATTR,
    FIXED_PARAMS_ATTR,
    PROPOSAL_ATTR,
    REPLICATE_ATTR,
    REPLICATE_OF_ATTR,
    RERUN_ATTR,
    SECONDS_ATTR,
)
from autopeft.search.kernel import prepare_fused_kernel
from autopeft.search.pareto import pareto_mask
from autopeft.space import PeftConfig, SearchSpace, size_keys

__all__ = [
    "SAMPLER_NAMES",
    "NUTS_DEFAULTS",
    "make_sampler",
    "ConfigSampler",
    "RandomConfigSampler",
    "BayesOptSampler",
    "ValidatingSampler",
]

SAMPLER_NAMES = ("saasbo", "gp", "random", "nsga2", "motpe")

#: NUTS settings of the "saasbo" sampler (warmup, draws before thinning, thinning:
#: num_samples // thinning = 8 MCMC samples of the GP hyperparameters). Half of BoTorch's
#: tutorial setting (512/256/16): the acquisition's cost grows with the number of MCMC
#: samples, and this keeps a proposal affordable on a 2-core CPU
#: (benchmarks/sampler_overhead.py; figures in docs/lab-notes/benchmarks-log.md).
#: Pass warmup_steps/num_samples/thinning to change it.
NUTS_DEFAULTS = {"warmup_steps": 256, "num_samples": 128, "thinning": 16, "max_tree_depth": 6}

#: The longest a proposal waits for an earlier trial's (`_wait_for_earlier_proposals`): an earlier
#: trial with no proposal this many seconds after its start is taken to have lost its worker.
PROPOSAL_WAIT_S = 300.0

_BO_OPTIONS = {
    "mc_samples": 32,
    "n_random_candidates": 512,
    "max_local_candidates": 1024,
    "climb_rounds": 2,
    "climb_top_k": 5,
    "max_batch_size": 512,
    "ref_point": None,
    "prune_baseline": True,
    "num_threads": 1,
    "percent_scale": "log",
    "score_floor_quantile": 0.0,
    "replicates": 0.0,
    "max_seeds": 4,
    "calibration_pairs": 0,
}
_NUTS_OPTIONS = ("warmup_steps", "num_samples", "thinning", "max_tree_depth")


# ----------------------------------------------------------------------------------
# public factory
# ----------------------------------------------------------------------------------
def make_sampler(
    name: str = "saasbo",
    space: SearchSpace | None = None,
    *,
    seed: int | None = None,
    n_init: int = 10,
    percent_fn: Callable[[PeftConfig], float] | None = None,
    candidates: Sequence[PeftConfig] | None = None,
    **options: Any,
) -> BaseSampler:
    """Build the sampler `name` for `space`.

    Args:
        name: one of ``SAMPLER_NAMES``: "saasbo", "gp", "random", "nsga2", "motpe".
        space: the configuration space; every proposal is a valid configuration of it.
        seed: makes the proposals reproducible (None: a random seed).
        n_init: number of initial random trials of the BO samplers; the population
            size of "nsga2" (its first generation is random); ``n_startup_trials`` of
            "motpe". Ignored by "random".
        percent_fn: analytic % trainable parameters of a configuration (e.g.
            ``ModelSpec.percent``); the BO samplers then model that objective exactly.
        candidates: restrict every proposal to these configurations (a tabular
            benchmark): BO scores only the unseen candidates, random draws among them,
            NSGA-II/MOTPE proposals are replaced by the nearest unseen candidate.
        options: "saasbo": ``fit`` ("nuts" | "map"), ``warmup_steps``, ``num_samples``,
            ``thinning``, ``max_tree_depth``; "saasbo" and "gp": ``mc_samples``,
            ``n_random_candidates``, ``max_local_candidates``, ``climb_rounds``,
            ``climb_top_k``, ``max_batch_size``, ``ref_point`` ((score, percent)),
            ``prune_baseline``, ``num_threads``, ``percent_scale`` ("log" | "linear"),
            ``score_floor_quantile`` (0 to < 1, default 0: see `floor_low_scores`),
            ``calibration_pairs`` (configurations retrained with a second seed right after
            the initial design, to measure the noise; default 0, the CLI's 2), ``replicates``
            (fraction of the trials that may retrain an evaluated configuration with a new
            seed, 0 to < 1, default 0) and ``max_seeds`` (default 4): see
            `BayesOptSampler._replicate`;
            "nsga2"/"motpe": keyword arguments of
            Optuna's ``NSGAIISampler`` / ``TPESampler``. ``ref_point`` is accepted and
            ignored by "random", "nsga2" and "motpe".

    Raises:
        UserError: unknown sampler name, unknown option or bad option value.
    """
    if not isinstance(name, str) or name.lower() not in SAMPLER_NAMES:
        raise UserError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}")
    name = name.lower()
    if not isinstance(space, SearchSpace):
        raise UserError(f"make_sampler needs a SearchSpace, got {type(space).__name__}")
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise UserError(f"n_init must be a positive integer, got {n_init!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UserError(f"seed must be an integer or None, got {seed!r}")
    if percent_fn is not None and not callable(percent_fn):
        raise UserError("percent_fn must be a callable PeftConfig -> float (e.g. ModelSpec.percent)")

    if name in ("saasbo", "gp"):
        return BayesOptSampler(
            space, model="saas" if name == "saasbo" else "gp", seed=seed, n_init=n_init,
            percent_fn=percent_fn, candidates=candidates, **options,
        )
    # The hypervolume reference point only matters to the BO samplers; accepted (and
    # ignored) by the others so that a driver can pass the same options to every sampler.
    options.pop("ref_point", None)
    if name == "random":
        _reject_options(name, options, ())
        return RandomConfigSampler(space, seed=seed, candidates=candidates)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            if name == "nsga2":
                kwargs = {"population_size": max(2, n_init), **options}
                delegate: BaseSampler = optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
            else:
                kwargs = {"n_startup_trials": n_init, "multivariate": True, **options}
                delegate = optuna.samplers.TPESampler(seed=seed, **kwargs)
        except TypeError as exc:
            raise UserError(f"sampler {name!r}: bad option ({exc})") from None
        except ValueError as exc:
            raise UserError(f"sampler {name!r}: bad option value ({exc})") from None
    return ValidatingSampler(delegate, space, seed=seed, candidates=candidates)


def _reject_options(name: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes no options"
        raise UserError(f"sampler {name!r}: unknown option(s) {unknown}; {hint}")


# ----------------------------------------------------------------------------------
# the space as an integer grid
# ----------------------------------------------------------------------------------
class _Grid:
    """The searched dimensions of a space as integer index vectors.

    Column j < n_sizes holds the index of ``space.searched_sizes[j]`` in its sorted size
    list; the remaining columns are the searched layer bits. ``to_x`` gives exactly
    ``space.encode`` (index / (len - 1), bits as 0/1).
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.size_keys = space.searched_sizes
        self.layer_ids = space.searched_layers
        self.n_sizes = len(self.size_keys)
        self.d = space.dim
        self.names = [*self.size_keys, *(f"layer_{i}" for i in self.layer_ids)]
        self.n_choices = np.array(
            [len(space.choices(k)) for k in self.size_keys] + [2] * len(self.layer_ids), dtype=np.int64
        )
        self.scale = (self.n_choices - 1).astype(np.float64)
        self.size_positive = [np.array([s > 0 for s in space.choices(k)]) for k in self.size_keys]
        self.fixed_module_on = any(
            space.choices(k)[0] > 0 for k in size_keys() if k not in self.size_keys
        )
        self.fixed_layer_on = any(f is True for f in space.fixed_layers)
        self.max_sizes = {k: max(space.choices(k)) for k in size_keys()}

    # conversions
    def to_x(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(idx, dtype=np.float64) / self.scale

    def from_x(self, x: np.ndarray) -> np.ndarray:
        return np.rint(np.asarray(x, dtype=np.float64) * self.scale).astype(np.int64)

    def params(self, row: np.ndarray) -> dict[str, int]:
        out: dict[str, int] = {}
        for j, key in enumerate(self.size_keys):
            out[key] = int(getattr(self.space, key)[int(row[j])])
        for j, i in enumerate(self.layer_ids):
            out[f"layer_{i}"] = int(row[self.n_sizes + j])
        return out

    def config(self, row: np.ndarray) -> PeftConfig:
        return self.space.from_params(self.params(row))

    def index(self, config: PeftConfig) -> np.ndarray:
        return self.from_x(self.space.encode(config))

    def row_from_params(self, params: Mapping[str, Any]) -> np.ndarray | None:
        """Index row of a (complete) Optuna parameter dict, or None if it is not one."""
        if not all(n in params for n in self.names):
            return None
        try:
            config = self.space.from_params(params)
        except (UserError, KeyError, TypeError, ValueError):
            return None
        if not self.space.contains(config):
            return None
        return self.index(config)

    def max_config(self) -> PeftConfig:
        layers = tuple(True if f is None else f for f in self.space.fixed_layers)
        return PeftConfig(**self.max_sizes, layers=layers)

    # validity and generation
    def valid(self, idx: np.ndarray) -> np.ndarray:
        idx = np.atleast_2d(idx)
        modules = np.full(len(idx), self.fixed_module_on)
        for j in range(self.n_sizes):
            modules |= self.size_positive[j][idx[:, j]]
        layers = np.full(len(idx), self.fixed_layer_on)
        if self.d > self.n_sizes:
            layers |= idx[:, self.n_sizes:].any(axis=1)
        return modules & layers

    def random(self, rng: np.random.Generator, n: int, fixed: Mapping[int, int] | None = None) -> np.ndarray:
        """Up to `n` uniformly random valid rows (rejection sampling; may repeat)."""
        out: list[np.ndarray] = []
        got = 0
        for _ in range(100):
            draw = rng.integers(0, self.n_choices, size=(max(2 * (n - got), 16), self.d))
            for j, v in (fixed or {}).items():
                draw[:, j] = v
            draw = draw[self.valid(draw)][: n - got]
            out.append(draw)
            got += len(draw)
            if got >= n:
                break
        return np.concatenate(out) if out else np.zeros((0, self.d), dtype=np.int64)

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Valid rows one size index +-1 or one/two layer bits away from `rows`."""
        rows = np.atleast_2d(rows)
        if len(rows) == 0:
            return rows
        parts = []
        for j in range(self.n_sizes):
            for step in (-1, 1):
                nb = rows.copy()
                nb[:, j] += step
                parts.append(nb[(nb[:, j] >= 0) & (nb[:, j] < self.n_choices[j])])
        bits = list(range(self.n_sizes, self.d))
        masks = [[b] for b in bits] + [list(p) for p in itertools.combinations(bits, 2)]
        if masks:
            m = np.zeros((len(masks), self.d), dtype=np.int64)
            for r, cols in enumerate(masks):
                m[r, cols] = 1
            parts.append((rows[:, None, :] ^ m[None, :, :]).reshape(-1, self.d))
        out = np.concatenate(parts)
        return _unique_rows(out[self.valid(out)])

    def n_points(self) -> int:
        return int(np.prod(self.n_choices.astype(object)))

    def enumerate_valid(self) -> np.ndarray:
        grid = np.array(list(itertools.product(*(range(c) for c in self.n_choices))), dtype=np.int64)
        grid = grid.reshape(-1, self.d)
        return grid[self.valid(grid)]


def _unique_rows(rows: np.ndarray) -> np.ndarray:
    """Unique rows, in order of first appearance (deterministic)."""
    if len(rows) == 0:
        return rows
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def _key(row: np.ndarray) -> bytes:
    return np.asarray(row, dtype=np.int64).tobytes()


def _not_in(rows: np.ndarray, keys: set[bytes]) -> np.ndarray:
    if len(rows) == 0:
        return rows
    return rows[np.array([_key(r) not in keys for r in rows], dtype=bool)]


# ----------------------------------------------------------------------------------
# study history
# ----------------------------------------------------------------------------------
@dataclass
class _History:
    obs_rows: list[np.ndarray]  # every evaluation: a replicated configuration appears once per seed
    obs_scores: list[float]
    obs_percents: list[float | None]
    obs_numbers: list[int]
    pending_rows: list[np.ndarray]
    failed_rows: list[np.ndarray]
    n_started: int  # trials other than the current one that did not fail
    n_replicates: int = 0  # of these, replicates (evaluated or pending)

    def seen_keys(self) -> set[bytes]:
        return {_key(r) for r in (*self.obs_rows, *self.pending_rows, *self.failed_rows)}

    def configurations(self) -> dict[bytes, dict[str, Any]]:
        """Evaluated configurations in order of first evaluation: row, first trial, scores, percent, and
        ``n``, the evaluations done or pending (the next replicate's index)."""
        out: dict[bytes, dict[str, Any]] = {}
        for row, score, pct, number in zip(self.obs_rows, self.obs_scores, self.obs_percents, self.obs_numbers):
            entry = out.setdefault(_key(row), {"row": row, "first": number, "scores": [], "percent": pct, "n": 0})
            entry["scores"].append(score)
            entry["first"] = min(entry["first"], number)
            entry["n"] += 1
        for row in self.pending_rows:
            if _key(row) in out:
                out[_key(row)]["n"] += 1
        return dict(sorted(out.items(), key=lambda kv: kv[1]["first"]))


# ----------------------------------------------------------------------------------
# base class: samplers that propose a whole configuration of the space
# ----------------------------------------------------------------------------------
class ConfigSampler(BaseSampler):
    """Base of the samplers that propose whole configurations of a `SearchSpace`.

    Subclasses implement `_propose`. Parameters outside the space (if the driver suggests
    any) are sampled independently at random.
    """

    def __init__(
        self, space: SearchSpace, *, seed: int | None = None, candidates: Sequence[PeftConfig] | None = None
    ) -> None:
        self.space = space
        self._grid = _Grid(space)
        self._candidates = None if candidates is None else self._candidate_rows(candidates)
        self._seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % (2**32))
        self._independent = optuna.samplers.RandomSampler(seed=self._seed)
        self._distributions = space.optuna_distributions()
        self.last_proposal_seconds: float | None = None
        self.last_proposal: dict[str, Any] = {}

    # --- Optuna interface ---------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        _wait_for_earlier_proposals(study, trial)
        start = time.perf_counter()
        rng = self._trial_rng(trial)
        history = self._history(study, trial)
        fixed = self._fixed_dims(trial)
        info: dict[str, Any] = {"trial": trial.number}
        if fixed:
            row = self._random_unseen(rng, history.seen_keys(), fixed)
            info["kind"] = "random (partially enqueued trial)"
        else:
            row = self._propose(study, trial, history, rng, info)
        if "replicate" not in info:  # a replicate is an evaluated configuration on purpose
            row = self._restrict(row, history.seen_keys(), rng, info)
        params = self._grid.params(row)
        seconds = time.perf_counter() - start
        info["seconds"] = seconds
        self.last_proposal_seconds = seconds
        self.last_proposal = info
        _set_system_attrs(study, trial, params, seconds, info.get("replicate"))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().entropy % (2**32))
        self._independent.reseed_rng()

    # --- helpers --------------------------------------------------------------------
    def _propose(
        self, study: optuna.Study, trial: FrozenTrial, history: _History, rng: np.random.Generator, info: dict
    ) -> np.ndarray:
        raise NotImplementedError

    def _candidate_rows(self, candidates: Sequence[PeftConfig]) -> np.ndarray:
        for config in candidates:
            if not isinstance(config, PeftConfig) or not self.space.contains(config):
                raise UserError(f"candidates: {config!r} is not a configuration of the search space")
        if not candidates:
            raise UserError("candidates: the list is empty")
        return _unique_rows(np.stack([self._grid.index(c) for c in candidates]))

    def _restrict(self, row: np.ndarray, seen: set[bytes], rng: np.random.Generator, info: dict) -> np.ndarray:
        """With `candidates`, replace a proposal outside them by the nearest unseen candidate.

        Nearest = smallest L1 distance in the [0, 1]^d encoding (`space.encode`), ties
        broken at random. A tabular benchmark uses this for samplers that propose
        anywhere in the space (NSGA-II, MOTPE); the BO and random samplers already draw
        from the candidates only.
        """
        if self._candidates is None:
            return row
        unseen = _not_in(self._candidates, seen)
        if _key(row) in {_key(r) for r in unseen} or len(unseen) == 0:
            return row
        dist = np.abs(self._grid.to_x(unseen) - self._grid.to_x(row)).sum(axis=1)
        nearest = np.flatnonzero(dist == dist.min())
        info["snapped_from"] = self._grid.params(row)
        return unseen[nearest[int(rng.integers(len(nearest)))]]

    def _trial_rng(self, trial: FrozenTrial) -> np.random.Generator:
        return np.random.default_rng([self._seed, trial.number])

    def _fixed_dims(self, trial: FrozenTrial) -> dict[int, int]:
        """Dimensions fixed by `study.enqueue_trial` for this trial (index values)."""
        fixed_params = trial.system_attrs.get(FIXED_PARAMS_ATTR) or {}
        out: dict[int, int] = {}
        for j, name in enumerate(self._grid.names):
            if name in fixed_params:
                value = fixed_params[name]
                choices = list(getattr(self.space, name)) if j < self._grid.n_sizes else [0, 1]
                if value in choices:
                    out[j] = choices.index(value)
        return out

    def _random_unseen(
        self, rng: np.random.Generator, seen: set[bytes], fixed: Mapping[int, int] | None = None
    ) -> np.ndarray:
        """A uniformly random valid row (or candidate) not in `seen` (any once all are seen)."""
        if self._candidates is not None and not fixed:
            rows = _not_in(self._candidates, seen)
            if len(rows):
                return rows[rng.integers(len(rows))]
        for _ in range(20):
            rows = _not_in(self._grid.random(rng, 64, fixed), seen)
            if len(rows):
                return rows[0]
        if not fixed and self._grid.n_points() <= 200_000:
            rows = _not_in(self._grid.enumerate_valid(), seen)
            if len(rows):
                return rows[rng.integers(len(rows))]
        rows = self._grid.random(rng, 1, fixed)
        if len(rows) == 0:  # enqueued values that admit no valid completion
            rows = self._grid.random(rng, 1)
        warnings.warn("every configuration of the search space has been tried; repeating one", stacklevel=3)
        return rows[0]

    def _history(self, study: optuna.Study, trial: FrozenTrial) -> _History:
        obs_rows, scores, percents, numbers, pending, failed = [], [], [], [], [], []
        n_started = n_replicates = 0
        trials = study.get_trials(deepcopy=False)
        rerun = {t.user_attrs.get(RERUN_ATTR) for t in trials}
        for t in trials:
            if t.number == trial.number or (t.state == TrialState.FAIL and t.number in rerun):
                continue
            if t.state == TrialState.COMPLETE and DUPLICATE_OF_ATTR in t.user_attrs:
                continue  # told with an evaluated configuration's values: no new observation
            if t.state != TrialState.FAIL:
                n_started += 1
                n_replicates += REPLICATE_OF_ATTR in t.user_attrs or REPLICATE_ATTR in t.system_attrs
            row = self._row_of(t)
            if row is None:
                continue
            if t.state == TrialState.COMPLETE:
                values = t.values
                if values is None or len(values) < 1 or not math.isfinite(values[0]):
                    failed.append(row)
                    continue
                pct = values[1] if len(values) > 1 and math.isfinite(values[1]) and values[1] > 0 else None
                obs_rows.append(row)
                scores.append(float(values[0]))
                percents.append(None if pct is None else float(pct))
                numbers.append(t.number)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.append(row)
            else:  # FAIL, PRUNED
                failed.append(row)
        return _History(obs_rows, scores, percents, numbers, pending, failed, n_started, n_replicates)

    def _row_of(self, t: FrozenTrial) -> np.ndarray | None:
        row = self._grid.row_from_params(t.params)
        if row is None and isinstance(t.system_attrs.get(PROPOSAL_ATTR), Mapping):
            row = self._grid.row_from_params(t.system_attrs[PROPOSAL_ATTR])
        if row is None and isinstance(t.system_attrs.get(FIXED_PARAMS_ATTR), Mapping):
            row = self._grid.row_from_params({**t.params, **t.system_attrs[FIXED_PARAMS_ATTR]})
        return row


def _wait_for_earlier_proposals(study: optuna.Study, trial: FrozenTrial) -> None:
    """Wait until every running trial numbered below `trial` has its proposal recorded.

    Workers sharing a study then propose in trial order, each seeing the proposals of the
    others (pending configurations, replicates) before it makes its own; otherwise two
    workers asking at once could both take the last replicate, or the same configuration.
    Optuna's storages have no lock to take for this; trial numbers are the order all agree on
    (as for the budget: `search.study._over_budget`). A trial still without a proposal
    PROPOSAL_WAIT_S after its start is not waited for.
    """
    while True:
        now = datetime.datetime.now()
        earlier = [
            t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number < trial.number and PROPOSAL_ATTR not in t.system_attrs and t.datetime_start is not None
            and (now - t.datetime_start).total_seconds() < PROPOSAL_WAIT_S
        ]
        if not earlier:
            return
        time.sleep(0.05)


def _set_system_attrs(study: optuna.Study, trial: FrozenTrial, params: Mapping[str, int], seconds: float,
                      replicate: Mapping[str, int] | None = None) -> None:
    """Record the proposal; PROPOSAL_ATTR last, as it marks the proposal done (`_wait_for_earlier_proposals`)."""
    try:
        if replicate is not None:
            optuna_access.set_trial_system_attr(study, trial, REPLICATE_ATTR, dict(replicate))
        optuna_access.set_trial_system_attr(study, trial, SECONDS_ATTR, float(seconds))
        optuna_access.set_trial_system_attr(study, trial, PROPOSAL_ATTR, dict(params))
    except Exception:  # noqa: BLE001 - bookkeeping only; a read-only/finished trial must not break sampling
        pass


# ----------------------------------------------------------------------------------
# random
# ----------------------------------------------------------------------------------
class RandomConfigSampler(ConfigSampler):
    """Uniformly random valid configurations, never one already tried while any is left."""

    def _propose(self, study, trial, history, rng, info):
        info["kind"] = "random"
        return self._random_unseen(rng, history.seen_keys())


# ----------------------------------------------------------------------------------
# Bayesian optimisation
# ----------------------------------------------------------------------------------
class BayesOptSampler(ConfigSampler):
    """SAAS-GP (or standard GP) + qLogNEHVI over a discrete PEFT space (module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        model: str = "saas",
        fit: str = "map",
        seed: int | None = None,
        n_init: int = 10,
        percent_fn: Callable[[PeftConfig], float] | None = None,
        candidates: Sequence[PeftConfig] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(space, seed=seed, candidates=candidates)
        if model not in ("saas", "gp"):
            raise UserError(f"model must be 'saas' or 'gp', got {model!r}")
        if fit not in ("nuts", "map"):
            raise UserError(f"sampler 'saasbo': option fit must be 'nuts' or 'map', got {fit!r}")
        allowed = list(_BO_OPTIONS)
        if model == "saas":
            allowed += [*_NUTS_OPTIONS, "fit"]
        _reject_options("saasbo" if model == "saas" else "gp", options, allowed)
        self.model_kind = model
        self.fit = fit if model == "saas" else "mll"
        self.n_init = int(n_init)
        self.percent_fn = percent_fn
        self.nuts = {k: options.get(k, v) for k, v in NUTS_DEFAULTS.items()}
        for k, v in self.nuts.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k != "warmup_steps" else 0):
                raise UserError(f"sampler 'saasbo': option {k} must be a positive integer, got {v!r}")
        if self.nuts["num_samples"] < self.nuts["thinning"]:
            raise UserError("sampler 'saasbo': num_samples must be >= thinning "
                            "(num_samples // thinning draws are kept)")
        opts = {k: options.get(k, v) for k, v in _BO_OPTIONS.items()}
        for k in ("mc_samples", "max_batch_size", "climb_top_k", "num_threads"):
            if isinstance(opts[k], bool) or not isinstance(opts[k], int) or opts[k] < 1:
                raise UserError(f"sampler option {k} must be a positive integer, got {opts[k]!r}")
        for k in ("n_random_candidates", "max_local_candidates", "climb_rounds"):
            if isinstance(opts[k], bool) or not isinstance(opts[k], int) or opts[k] < 0:
                raise UserError(f"sampler option {k} must be a non-negative integer, got {opts[k]!r}")
        if opts["percent_scale"] not in ("log", "linear"):
            raise UserError(f"sampler option percent_scale must be 'log' or 'linear', got {opts['percent_scale']!r}")
        r = opts["replicates"]
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
            raise UserError(f"sampler option replicates must be a fraction of the trials in [0, 1), got {r!r}")
        for k in ("max_seeds", "calibration_pairs"):
            if isinstance(opts[k], bool) or not isinstance(opts[k], int) or opts[k] < (2 if k == "max_seeds" else 0):
                least = 2 if k == "max_seeds" else 0
                raise UserError(f"sampler option {k} must be an integer >= {least}, got {opts[k]!r}")
        q = opts["score_floor_quantile"]
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q < 1:
            raise UserError(f"sampler option score_floor_quantile must be a number in [0, 1), got {q!r}")
        if opts["ref_point"] is not None:
            rp = opts["ref_point"]
            if (
                not isinstance(rp, (list, tuple)) or len(rp) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rp) or rp[1] <= 0
            ):
                raise UserError(f"ref_point must be (score, percent) with percent > 0, got {rp!r}")
        self.options = opts
        self._percent_cache: dict[bytes, float] = {}

    # --- proposal -------------------------------------------------------------------
    def _propose(self, study, trial, history, rng, info):
        _check_directions(study)
        seen = history.seen_keys()
        info.update(n_observations=len(history.obs_rows), n_pending=len(history.pending_rows))
        if history.n_started < self.n_init or len(history.obs_rows) < 2:
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

            with torch.random.fork_rng(devices=[]), _thread_limit(self.options["num_threads"]):
                torch.manual_seed(torch_seed)
                row = self._bo_step(history, seen, rng, torch_seed, info)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - a failed fit must not end a long search
            warnings.warn(f"BO proposal failed ({type(exc).__name__}: {exc}); proposing a random configuration",
                          stacklevel=2)
            info["kind"] = f"random (BO failed: {type(exc).__name__})"
            row = None
        if row is None:
            row = self._random_unseen(rng, seen)
        return row

    def _replicate(self, history: _History, budget: int | None) -> tuple[dict[str, Any], str] | None:
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
        fraction = self.options["replicates"]
        pairs = self.options["calibration_pairs"]
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
        open_ = [(c, m) for c, m in front if c["n"] < self.options["max_seeds"]]
        if not open_:
            return None
        best = min(open_, key=lambda cm: (cm[0]["n"], -cm[1], cm[0]["first"]))
        return best[0], "replicate (front member with the largest standard error)"

    def _percent(self, row: np.ndarray) -> float:
        key = _key(row)
        value = self._percent_cache.get(key)
        if value is None:
            value = float(self.percent_fn(self._grid.config(row)))  # type: ignore[misc]
            if not math.isfinite(value):
                raise UserError(f"percent_fn returned {value} for {self._grid.config(row).describe()}")
            self._percent_cache[key] = value
        return value

    def _bo_step(self, history: _History, seen: set[bytes], rng: np.random.Generator, torch_seed: int,
                 info: dict) -> np.ndarray | None:
        import torch

        grid = self._grid
        obs = np.stack(history.obs_rows)
        scores = np.asarray(history.obs_scores, dtype=np.float64)
        if self.percent_fn is not None:
            percents = np.array([self._percent(r) for r in obs])
        else:
            keep = np.array([p is not None for p in history.obs_percents])
            if keep.sum() < 2:
                return None
            obs, scores = obs[keep], scores[keep]
            percents = np.array([p for p in history.obs_percents if p is not None], dtype=np.float64)
        scores = floor_low_scores(scores, self.options["score_floor_quantile"])
        ref_score, ref_percent = self._ref_point(scores, percents)
        info["ref_point"] = (ref_score, ref_percent)
        ref = np.array([ref_score, float(self._percent_objective(np.array([ref_percent]))[0])])

        # candidate pool: around the front of the configurations' mean scores
        index_of: dict[bytes, int] = {}
        inverse = np.array([index_of.setdefault(_key(r), len(index_of)) for r in obs])
        uniq = _unique_rows(obs)  # in order of first appearance, as index_of
        mean_scores = np.bincount(inverse, weights=scores) / np.bincount(inverse)
        uniq_percents = np.zeros(len(uniq))
        uniq_percents[inverse] = percents
        candidates = self._candidate_pool(uniq, mean_scores, uniq_percents, seen, rng)
        info["n_candidates"] = int(len(candidates))
        if len(candidates) == 0:
            return None

        t0 = time.perf_counter()
        X = torch.as_tensor(grid.to_x(obs), dtype=torch.float64)
        model, sampler = self._fit_models(X, scores, percents, torch_seed)
        info["fit_seconds"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        pending = history.pending_rows
        X_pending = torch.as_tensor(grid.to_x(np.stack(pending)), dtype=torch.float64) if pending else None
        X_baseline = torch.as_tensor(grid.to_x(uniq), dtype=torch.float64)
        acq = self._acquisition(model, sampler, ref, X_baseline, X_pending)
        evaluated = candidates
        values = self._evaluate(acq, candidates)
        evaluated_keys = {_key(r) for r in candidates}
        for _ in range(self.options["climb_rounds"] if self._candidates is None else 0):
            top = evaluated[np.argsort(-values, kind="stable")[: self.options["climb_top_k"]]]
            nbrs = _not_in(grid.neighbours(top), seen | evaluated_keys)
            if len(nbrs) > self.options["max_local_candidates"] > 0:
                nbrs = nbrs[np.sort(rng.choice(len(nbrs), self.options["max_local_candidates"], replace=False))]
            if len(nbrs) == 0:
                break
            evaluated = np.concatenate([evaluated, nbrs])
            values = np.concatenate([values, self._evaluate(acq, nbrs)])
            evaluated_keys |= {_key(r) for r in nbrs}
        info["acq_seconds"] = time.perf_counter() - t1
        info["n_evaluated"] = int(len(evaluated))
        best = int(np.argmax(values))
        info["acq_value"] = float(values[best])
        info["kind"] = "bo"
        return evaluated[best]

    def _ref_point(self, scores: np.ndarray, percents: np.ndarray) -> tuple[float, float]:
        """Reference point (score, percent) of the hypervolume the acquisition improves."""
        if self.options["ref_point"] is not None:
            s, p = self.options["ref_point"]
            return float(s), float(p)
        lo, hi = float(scores.min()), float(scores.max())
        spread = hi - lo if hi > lo else max(abs(lo), 1.0)
        if self.percent_fn is not None:
            pct_ref = max(float(self.percent_fn(self._grid.max_config())), float(percents.max()))
        else:
            pct_ref = 1.1 * float(percents.max())
        return lo - 0.1 * spread, pct_ref

    def _percent_objective(self, percents: np.ndarray) -> np.ndarray:
        """The maximised second objective: -log10(percent) or -percent (option ``percent_scale``)."""
        if self.options["percent_scale"] == "linear":
            return -np.asarray(percents, dtype=np.float64)
        return -np.log10(np.maximum(percents, 1e-12))

    def _candidate_pool(self, obs, scores, percents, seen, rng) -> np.ndarray:
        grid = self._grid
        if self._candidates is not None:
            return _not_in(self._candidates, seen)
        n_rand, n_local = self.options["n_random_candidates"], self.options["max_local_candidates"]
        if grid.n_points() <= max(n_rand + n_local, 1):
            return _not_in(grid.enumerate_valid(), seen)
        front = obs[pareto_mask(scores, percents)]
        local = _not_in(grid.neighbours(front), seen)
        if len(local) > n_local:
            local = local[np.sort(rng.choice(len(local), n_local, replace=False))]
        random_rows = _not_in(grid.random(rng, n_rand), seen) if n_rand else np.zeros((0, grid.d), dtype=np.int64)
        pool = _unique_rows(np.concatenate([local, random_rows]))
        if len(pool) == 0:  # everything nearby was tried: look further
            pool = _not_in(_unique_rows(grid.random(rng, 4096)), seen)
        return pool

    # --- models ---------------------------------------------------------------------
    def _fit_models(self, X, scores: np.ndarray, percents: np.ndarray, torch_seed: int):
        import torch
        from botorch.models.deterministic import GenericDeterministicModel
        from botorch.models.model import ModelList
        from botorch.sampling.index_sampler import IndexSampler
        from botorch.sampling.list_sampler import ListSampler
        from botorch.sampling.normal import SobolQMCNormalSampler

        shape = torch.Size([self.options["mc_samples"]])
        y_score = torch.as_tensor(scores, dtype=torch.float64).unsqueeze(-1)
        score_model = self._fit_one(X, y_score, torch_seed)
        if self.percent_fn is not None:
            pct_model = GenericDeterministicModel(self._percent_objective_of_x, num_outputs=1)
            pct_sampler = IndexSampler(shape, seed=torch_seed + 1)
        else:
            y_pct = torch.as_tensor(self._percent_objective(percents), dtype=torch.float64).unsqueeze(-1)
            pct_model = self._fit_one(X, y_pct, torch_seed + 2)
            pct_sampler = SobolQMCNormalSampler(shape, seed=torch_seed + 1)
        sampler = ListSampler(SobolQMCNormalSampler(shape, seed=torch_seed), pct_sampler)
        return ModelList(score_model, pct_model), sampler

    def _fit_one(self, X, Y, seed: int):
        from botorch.models.transforms.outcome import Standardize

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            if self.model_kind == "gp":
                from botorch.fit import fit_gpytorch_mll
                from botorch.models import SingleTaskGP
                from gpytorch.mlls import ExactMarginalLogLikelihood

                model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
                fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            elif self.fit == "map":
                from botorch.fit import get_fitted_map_saas_model

                model = get_fitted_map_saas_model(X, Y, outcome_transform=Standardize(m=1))
            else:
                from botorch.fit import fit_fully_bayesian_model_nuts
                from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

                model = SaasFullyBayesianSingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
                fit_fully_bayesian_model_nuts(
                    model,
                    max_tree_depth=self.nuts["max_tree_depth"],
                    warmup_steps=self.nuts["warmup_steps"],
                    num_samples=self.nuts["num_samples"],
                    thinning=self.nuts["thinning"],
                    disable_progbar=True,
                    seed=seed,
                )
                # Each NUTS fit JIT-compiles new JAX code (the model closes over the data) and
                # JAX keeps every executable: about 1000 memory maps and 200 MB per fit, so a
                # 3-seed NUTS replay hit the kernel's map limit and crashed after about 90 fits.
                jax = sys.modules.get("jax")
                if jax is not None:
                    jax.clear_caches()
        model.eval()
        return model

    def _percent_objective_of_x(self, X):
        """Second objective of encoded configurations via percent_fn; X: ``batch x n x d`` -> ``batch x n x 1``."""
        import torch

        flat = X.detach().reshape(-1, X.shape[-1]).cpu().numpy()
        rows = self._grid.from_x(flat)
        uniq, inverse = np.unique(rows, axis=0, return_inverse=True)
        vals = self._percent_objective(np.array([self._percent(r) for r in uniq], dtype=np.float64))
        out = torch.as_tensor(vals[np.asarray(inverse).reshape(-1)], dtype=X.dtype, device=X.device)
        return out.reshape(*X.shape[:-1], 1)

    def _acquisition(self, model, sampler, ref: np.ndarray, X_baseline, X_pending):
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
                prune_baseline=self.options["prune_baseline"],
            )

    def _evaluate(self, acq, rows: np.ndarray) -> np.ndarray:
        import torch

        X = torch.as_tensor(self._grid.to_x(rows), dtype=torch.float64)
        out = []
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")
            for chunk in X.split(self.options["max_batch_size"]):
                out.append(acq(chunk.unsqueeze(-2)))
        values = torch.cat(out).reshape(-1).numpy().astype(np.float64)
        return np.where(np.isnan(values), -np.inf, values)


def floor_low_scores(scores: np.ndarray, quantile: float) -> np.ndarray:
    """Scores below their `quantile` raised to it (lower-tail winsorisation, like Ax's Winsorize).

    The front is made of good configurations; a few that hardly learn (scores near the
    majority class) would otherwise set the GP's output scale and flatten its picture of
    the good ones. `quantile` 0 leaves the scores as they are. scores: ``(n,)``.
    """
    if quantile <= 0 or len(scores) == 0:
        return scores
    return np.maximum(scores, np.quantile(scores, quantile))


def _check_directions(study: optuna.Study) -> None:
    want = [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    if list(study.directions) != want:
        raise UserError(
            "the BO samplers need a study with directions ['maximize', 'minimize'] and values "
            f"(score, percent); this study has {[d.name.lower() for d in study.directions]}"
        )


@contextlib.contextmanager
def _thread_limit(n: int):
    """Run with at most `n` torch threads and `n` BLAS threads (OpenBLAS, MKL), then restore.

    The GP matrices of a search are small (n <= a few hundred); with 2 threads each
    small BLAS/LAPACK call hands work to another thread, and on a busy 2-core machine
    that thread waits for a time slice, which made the fits several times slower.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=n, user_api="blas")
        with limits:
            yield
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------
# Optuna's own samplers, made to propose valid configurations only
# ----------------------------------------------------------------------------------
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
        candidates: Sequence[PeftConfig] | None = None,
    ) -> None:
        super().__init__(space, seed=seed, candidates=candidates)
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
