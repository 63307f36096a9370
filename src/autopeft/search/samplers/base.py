"""The base of autopeft's samplers: whole configurations, the study's history, recorded proposals.

- Whole configurations at once: the relative search space is the whole space and
  ``sample_relative`` returns every parameter, as a `SpaceGrid` row that subclasses propose
  (`ConfigSampler._propose`).
- Standard modules first: the first trials of a search are the standard modules of the space
  (`standards`, e.g. SA, PA, PT at hidden/16 and LoRA r=8 in all layers), then the subclass's
  proposals. They are ordinary trials: a user compares the search's answer with them.
- An enqueued trial whose parameters are all fixed is taken as it is (the promotion trials of
  `search.promotion` are such trials).
- History (`History`): the study's trials as rows. Promoted evaluations (user attr
  PROMOTION_ATTR) are at another fidelity and left out. COMPLETE trials are observations;
  RUNNING and WAITING (enqueued) trials other than the current one are pending; FAIL and
  PRUNED trials are failed configurations (not retried). A FAIL trial that a later trial
  re-runs (user attr ``rerun_of``: a stale or interrupted trial, queued again) is not a
  failed configuration and is left out.
- No duplicates: evaluated, pending and failed configurations are never proposed again while
  any other is left (then one is repeated, with a warning).
- Recorded proposals: a trial's whole proposal is stored in its system attribute
  `PROPOSAL_ATTR` as soon as it is made, so a pending trial counts even before all its
  parameters are suggested; its duration in `SECONDS_ATTR` (and ``sampler.last_proposal_seconds``,
  with the details in ``sampler.last_proposal``). Workers sharing a study propose in trial
  order (`wait_for_earlier_proposals`).
- Determinism: every random choice of a proposal derives from ``(seed, trial.number)``, so a
  given seed gives the same proposals, also when a study is resumed with a fresh sampler.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import UserError
from autopeft.log import get_logger
from autopeft.search import optuna_access
from autopeft.search.attrs import (
    DUPLICATE_OF_ATTR,
    FIXED_PARAMS_ATTR,
    PROMOTION_ATTR,
    PROPOSAL_ATTR,
    REPLICATE_ATTR,
    REPLICATE_OF_ATTR,
    RERUN_ATTR,
    SECONDS_ATTR,
)
from autopeft.space import PeftConfig, SearchSpace, row_key, rows_not_in, unique_rows

logger = get_logger(__name__)

__all__ = ["ConfigSampler", "History", "PROPOSAL_WAIT_S", "wait_for_earlier_proposals"]

#: The longest a proposal waits for an earlier trial's (`wait_for_earlier_proposals`): an earlier
#: trial with no proposal this many seconds after its start is taken to have lost its worker.
PROPOSAL_WAIT_S = 300.0


@dataclass
class History:
    """The study's trials other than the current one, as `SpaceGrid` rows (each ``d``)."""

    obs_rows: list[np.ndarray]  # every evaluation: a replicated configuration appears once per seed
    obs_scores: list[float]
    obs_percents: list[float | None]
    obs_numbers: list[int]
    pending_rows: list[np.ndarray]
    failed_rows: list[np.ndarray]
    n_started: int  # trials other than the current one that did not fail
    n_replicates: int = 0  # of these, replicates (evaluated or pending)

    def seen_keys(self) -> set[bytes]:
        """Keys of every evaluated, pending or failed configuration."""
        return {row_key(r) for r in (*self.obs_rows, *self.pending_rows, *self.failed_rows)}

    def configurations(self) -> dict[bytes, dict[str, Any]]:
        """Evaluated configurations in order of first evaluation: row, first trial, scores, percent, and
        ``n``, the evaluations done or pending (the next replicate's index)."""
        out: dict[bytes, dict[str, Any]] = {}
        for row, score, pct, number in zip(self.obs_rows, self.obs_scores, self.obs_percents, self.obs_numbers):
            entry = out.setdefault(row_key(row), {"row": row, "first": number, "scores": [], "percent": pct, "n": 0})
            entry["scores"].append(score)
            entry["first"] = min(entry["first"], number)
            entry["n"] += 1
        for row in self.pending_rows:
            if row_key(row) in out:
                out[row_key(row)]["n"] += 1
        return dict(sorted(out.items(), key=lambda kv: kv[1]["first"]))


class ConfigSampler(BaseSampler):
    """Base of the samplers that propose whole configurations of a `SearchSpace`.

    Subclasses implement `_propose`. Parameters outside the space (if the driver suggests
    any) are sampled independently at random.

    Args:
        space: every proposal is a valid configuration of it.
        seed: seeds every proposal (None: a random seed).
        candidates: restrict the proposals to these configurations of the space.
        standards: configurations of the space proposed first, in order (the standard modules).
    """

    def __init__(
        self, space: SearchSpace, *, seed: int | None = None, candidates: Sequence[PeftConfig] | None = None,
        standards: Sequence[PeftConfig] = (),
    ) -> None:
        self.space = space
        self._grid = space.grid()
        self._candidates = None if candidates is None else self._candidate_rows(candidates)
        for config in standards:
            if not space.contains(config):
                raise UserError(f"standards: {config.describe()} is not a configuration of the search space")
        self._standards = [self._grid.index(c) for c in standards]
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
        wait_for_earlier_proposals(study, trial)
        start = time.perf_counter()
        rng = self._trial_rng(trial)
        history = self._history(study, trial)
        fixed = self._fixed_dims(trial)
        info: dict[str, Any] = {"trial": trial.number}
        standard = self._next_standard(history)
        if len(fixed) == self._grid.d:  # an enqueued whole configuration (a re-run, a promotion): as it is
            row = np.array([fixed[j] for j in range(self._grid.d)], dtype=np.int64)
            info["kind"] = "enqueued"
        elif fixed:
            row = self._random_unseen(rng, history.seen_keys(), fixed)
            info["kind"] = "random (partially enqueued trial)"
        elif standard is not None:
            row = standard
            info["kind"] = "standard module"
        else:
            row = self._propose(study, trial, history, rng, info)
        if "replicate" not in info and info["kind"] != "enqueued":  # these repeat a configuration on purpose
            row = self._restrict(row, history.seen_keys(), rng, info)
        params = self._grid.params(row)
        seconds = time.perf_counter() - start
        info["seconds"] = seconds
        self.last_proposal_seconds = seconds
        self.last_proposal = info
        _record_proposal(study, trial, params, seconds, info.get("replicate"))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().entropy % (2**32))
        self._independent.reseed_rng()

    @property
    def n_standards(self) -> int:
        """How many standard modules open the search."""
        return len(self._standards)

    def _next_standard(self, history: History) -> np.ndarray | None:
        """The first standard module not yet seen, while the trials so far are fewer than the standards."""
        if history.n_started - history.n_replicates >= len(self._standards):
            return None
        seen = history.seen_keys()
        return next((row for row in self._standards if row_key(row) not in seen), None)

    # --- for subclasses -------------------------------------------------------------
    def _propose(
        self, study: optuna.Study, trial: FrozenTrial, history: History, rng: np.random.Generator, info: dict
    ) -> np.ndarray:
        """The proposed row (``d``). `rng` is this trial's; `info` collects the details (``info["kind"]``)."""
        raise NotImplementedError

    def _random_unseen(
        self, rng: np.random.Generator, seen: set[bytes], fixed: Mapping[int, int] | None = None
    ) -> np.ndarray:
        """A uniformly random valid row (or candidate) not in `seen` (any once all are seen)."""
        if self._candidates is not None and not fixed:
            rows = rows_not_in(self._candidates, seen)
            if len(rows):
                return rows[rng.integers(len(rows))]
        for _ in range(20):
            rows = rows_not_in(self._grid.random(rng, 64, fixed), seen)
            if len(rows):
                return rows[0]
        if not fixed and self._grid.n_points() <= 200_000:
            rows = rows_not_in(self._grid.enumerate_valid(), seen)
            if len(rows):
                return rows[rng.integers(len(rows))]
        rows = self._grid.random(rng, 1, fixed)
        if len(rows) == 0:  # enqueued values that admit no valid completion
            rows = self._grid.random(rng, 1)
        logger.warning("every configuration of the search space has been tried; repeating one")
        return rows[0]

    # --- helpers --------------------------------------------------------------------
    def _candidate_rows(self, candidates: Sequence[PeftConfig]) -> np.ndarray:
        for config in candidates:
            if not isinstance(config, PeftConfig) or not self.space.contains(config):
                raise UserError(f"candidates: {config!r} is not a configuration of the search space")
        if not candidates:
            raise UserError("candidates: the list is empty")
        return unique_rows(np.stack([self._grid.index(c) for c in candidates]))

    def _restrict(self, row: np.ndarray, seen: set[bytes], rng: np.random.Generator, info: dict) -> np.ndarray:
        """With `candidates`, replace a proposal outside them by the nearest unseen candidate.

        Nearest = smallest L1 distance in the [0, 1]^d encoding (`space.encode`), ties
        broken at random. A tabular benchmark uses this for samplers that propose
        anywhere in the space (NSGA-II, MOTPE); the BO and random samplers already draw
        from the candidates only.
        """
        if self._candidates is None:
            return row
        unseen = rows_not_in(self._candidates, seen)
        if row_key(row) in {row_key(r) for r in unseen} or len(unseen) == 0:
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

    def _history(self, study: optuna.Study, trial: FrozenTrial) -> History:
        obs_rows, scores, percents, numbers, pending, failed = [], [], [], [], [], []
        n_started = n_replicates = 0
        trials = study.get_trials(deepcopy=False)
        rerun = {t.user_attrs.get(RERUN_ATTR) for t in trials}
        for t in trials:
            if t.number == trial.number or (t.state == TrialState.FAIL and t.number in rerun):
                continue
            if PROMOTION_ATTR in t.user_attrs:
                continue  # an evaluation at a higher fidelity: not an observation of this one
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
        return History(obs_rows, scores, percents, numbers, pending, failed, n_started, n_replicates)

    def _row_of(self, t: FrozenTrial) -> np.ndarray | None:
        row = self._grid.row_from_params(t.params)
        if row is None and isinstance(t.system_attrs.get(PROPOSAL_ATTR), Mapping):
            row = self._grid.row_from_params(t.system_attrs[PROPOSAL_ATTR])
        if row is None and isinstance(t.system_attrs.get(FIXED_PARAMS_ATTR), Mapping):
            row = self._grid.row_from_params({**t.params, **t.system_attrs[FIXED_PARAMS_ATTR]})
        return row


def wait_for_earlier_proposals(study: optuna.Study, trial: FrozenTrial) -> None:
    """Wait until every running trial numbered below `trial` has its proposal recorded.

    Workers sharing a study then propose in trial order, each seeing the proposals of the
    others (pending configurations, replicates) before it makes its own; otherwise two
    workers asking at once could both take the last replicate, or the same configuration.
    Optuna's storages have no lock to take for this; trial numbers are the order all agree on
    (as for the budget). A trial still without a proposal PROPOSAL_WAIT_S after its start is
    not waited for.
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


def _record_proposal(study: optuna.Study, trial: FrozenTrial, params: Mapping[str, int], seconds: float,
                     replicate: Mapping[str, int] | None = None) -> None:
    """Record the proposal; PROPOSAL_ATTR last, as it marks the proposal done (`wait_for_earlier_proposals`)."""
    try:
        if replicate is not None:
            optuna_access.set_trial_system_attr(study, trial, REPLICATE_ATTR, dict(replicate))
        optuna_access.set_trial_system_attr(study, trial, SECONDS_ATTR, float(seconds))
        optuna_access.set_trial_system_attr(study, trial, PROPOSAL_ATTR, dict(params))
    except Exception:  # noqa: BLE001 - bookkeeping only; a read-only/finished trial must not break sampling
        pass

