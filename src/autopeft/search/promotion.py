"""Promotion: the front of a low-fidelity search, taken up a ladder of fidelities to the target.

Successive halving on non-dominated sorting, as MO-ASHA does it (Schmucker et al. 2021), on
ordinary Optuna trials:

- Candidates (rung 0, the search's own trials): `k` configurations spread along the front of
  configuration means, plus the standard modules on or near it (within 2 seed SDs of the best
  front score at or below their %; without a noise estimate, non-dominated rank 0 or 1), plus
  always the best standard module, so that the answer is compared with it at the target.
- Rung 1 trains every candidate at the ladder's first fidelity; each later rung keeps the
  ceil(n / 2) best of the rung below, ranked by non-dominated rank of their means and then by
  score (and again the best standard module). The last rung is the target fidelity; there each
  member trains with `final_seeds` seeds (training seeds `fidelity.seed`, `+ 1`, ...).
- The answer is the front of the means at the target: `answer_members`.

Every promoted evaluation is a trial of the study with user attr PROMOTION_ATTR = {"rung",
"seed_index", "fidelity"}; the samplers leave these trials out of their history. Which
evaluation comes next is worked out from the study's trials alone, so promotion resumes after a
kill and shares work between workers: each takes the first evaluation nobody holds.

This is written here rather than taken from a library: Optuna's pruners do not support
multi-objective studies, and Syne Tune's MOASHA schedules its own trials, not Optuna's.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import UserError, check_interrupt, interrupts_deferred, interrupts_recorded
from autopeft.log import get_logger
from autopeft.search import optuna_access
from autopeft.search.attrs import (CONFIG_ATTR, FAIL_REASON_ATTR, FIXED_PARAMS_ATTR, PROMOTION_ATTR, REPORT_SCORE_ATTR,
                                   STANDARD_ATTR, WORKER_ATTR)
from autopeft.search.noise import estimate_noise
from autopeft.search.pareto import pareto_mask, pareto_ranks, spread_along_front
from autopeft.search.results import config_key, config_rows
from autopeft.search.workers import Heartbeat, fail_trial, recover_stale, register_worker, this_worker
from autopeft.space import PeftConfig, SearchSpace
from autopeft.training import Fidelity

logger = get_logger(__name__)

__all__ = ["PromotionPlan", "PromotionTask", "answer_members", "check_plan_fits", "fidelity_ladder", "next_tasks",
           "run_promotion"]

WAIT_POLL_S = 2.0
NEAR_SDS = 2.0  # standard modules within this many seed SDs of the front are candidates
NEAR_RANK = 1  # without a noise estimate: those of non-dominated rank <= this
# Failures that say nothing about the configuration: the evaluation is scheduled again.
_RETRIED = ("interrupted", "stale", "not run")


def fidelity_ladder(search: Fidelity, target: Fidelity, available: int, eta: float = 3.0,
                    max_rungs: int = 3) -> list[Fidelity]:
    """The rungs above `search`, the last being `target`: about `eta` times more train example-epochs
    per rung (at most `max_rungs`), examples and epochs interpolated geometrically. Rungs that would
    train the same examples and epochs as the one below are left out. `available`: train examples."""
    cost0 = search.n_train(available) * search.epochs
    cost_t = target.n_train(available) * target.epochs
    steps = max(1, min(max_rungs, math.ceil(math.log(max(cost_t / cost0, 1.0)) / math.log(eta) - 1e-9)))
    e0, et = search.n_train(available), target.n_train(available)
    rungs: list[Fidelity] = []
    for i in range(1, steps + 1):
        if i == steps:
            rung = target
        else:
            t = i / steps
            rung = replace(target, train_examples=round(e0 * (et / e0) ** t),
                           epochs=round(search.epochs * (target.epochs / search.epochs) ** t, 1))
        last = rungs[-1] if rungs else search
        if (rung.n_train(available), rung.epochs) == (last.n_train(available), last.epochs) and i < steps:
            continue
        rungs.append(rung)
    return rungs


@dataclass(frozen=True)
class PromotionPlan:
    """How a search's front goes up to the target.

    k: candidates spread along the front (besides the standard modules); rungs: the fidelities
    above the search's, the last the target (`fidelity_ladder`); labels: each rung's
    "EXAMPLESxEPOCHS"; final_seeds: seeds of each member at the target (>= 2); keep_standards:
    every standard module that enters the ladder goes on to the target, not only the best one
    (a variant under test, benchmarks/promotion_pays.py --variant keep-standards).
    """

    k: int
    rungs: tuple[Fidelity, ...]
    labels: tuple[str, ...]
    final_seeds: int = 2
    keep_standards: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"promote must be >= 1 candidate, got {self.k}")
        if self.final_seeds < 2:
            raise UserError(f"final_seeds must be >= 2 (the answer is a mean over seeds), got {self.final_seeds}")
        if not self.rungs or len(self.rungs) != len(self.labels):
            raise ValueError("a promotion plan needs one label per rung, and at least one rung")

    def seeds(self, rung: int) -> int:
        """Seeds per member at `rung` (1-based): one below the target, `final_seeds` there."""
        return self.final_seeds if rung == len(self.rungs) else 1

    def members(self, n_candidates: int, n_standards: int) -> list[int]:
        """The most members each rung can have, for `n_candidates` (the protected standard modules included)."""
        out, n = [], n_candidates
        for _ in self.rungs:
            out.append(n)
            n = min(n, math.ceil(n / 2) + n_standards) if self.keep_standards else math.ceil(n / 2) + 1
        return out

    def max_trials(self, n_standards: int) -> int:
        """The most evaluations promotion can take (what it reserves of the budget)."""
        counts = self.members(self.k + n_standards, n_standards)
        return sum(c * self.seeds(i + 1) for i, c in enumerate(counts))

    def to_dict(self) -> dict[str, Any]:
        data = {"k": self.k, "rungs": [f.to_dict() for f in self.rungs], "labels": list(self.labels),
                "final_seeds": self.final_seeds}
        return {**data, "keep_standards": True} if self.keep_standards else data  # studies stored before it match

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromotionPlan:
        return cls(int(data["k"]), tuple(Fidelity(**f) for f in data["rungs"]), tuple(data["labels"]),
                   int(data.get("final_seeds", 2)), bool(data.get("keep_standards", False)))


@dataclass(frozen=True)
class PromotionTask:
    """One promoted evaluation: a configuration at a rung (1-based) with one seed."""

    config: dict[str, Any]
    rung: int
    seed_index: int
    standard: str | None = None

    @property
    def key(self) -> tuple[str, int, int]:
        return config_key(self.config), self.rung, self.seed_index


@dataclass
class _Member:
    config: dict[str, Any]
    percent: float
    standard: str | None
    scores: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else -math.inf


def _promotion(t: FrozenTrial) -> dict[str, Any] | None:
    value = t.user_attrs.get(PROMOTION_ATTR)
    return value if isinstance(value, dict) else None


def _task_key(t: FrozenTrial) -> tuple[str, int, int] | None:
    """(configuration key, rung, seed index) of a promoted evaluation; None for the search's own trials."""
    info = _promotion(t)
    return None if info is None else (config_key(t.user_attrs[CONFIG_ATTR]), int(info["rung"]), int(info["seed_index"]))


def _retried(t: FrozenTrial) -> bool:
    reason = t.user_attrs.get(FAIL_REASON_ATTR)
    return reason is None or str(reason).startswith(_RETRIED)


def _rung_results(study: optuna.Study, rung: int) -> tuple[dict[tuple, FrozenTrial], set[tuple], set[tuple]]:
    """Rung `rung`'s evaluations: task key -> COMPLETE trial; keys RUNNING; keys failed for good."""
    done: dict[tuple, FrozenTrial] = {}
    held: set[tuple] = set()
    failed: set[tuple] = set()
    for t in study.get_trials(deepcopy=False):
        key = _task_key(t)
        if key is None or key[1] != rung:
            continue
        if t.state == TrialState.COMPLETE:
            done.setdefault(key, t)
        elif t.state == TrialState.RUNNING:  # not WAITING: one queued by a killed worker would be waited for forever
            held.add(key)
        elif t.state == TrialState.FAIL and not _retried(t):
            failed.add(key)
    return done, held, failed


def _spread(members: list[_Member], k: int) -> list[_Member]:
    """K members evenly spaced by rank along a front sorted by percent, both ends included; k = 1: the best score."""
    if k == 1 and members:
        return [max(members, key=lambda m: m.mean)]
    return spread_along_front(members, k)


def _best_standard(members: list[_Member]) -> _Member | None:
    standards = [m for m in members if m.standard is not None and m.scores]
    return max(standards, key=lambda m: m.mean, default=None)


def _candidates(study: optuna.Study, plan: PromotionPlan) -> list[_Member]:
    """Rung 0's candidates: `plan.k` spread along the front of means, the standard modules near it, and the best
    standard module."""
    rows = config_rows(study)
    if not rows:
        return []
    members = [_Member(r["config"], r["percent"], r["standard"], r["scores"]) for r in rows]
    scores, percents = [m.mean for m in members], [m.percent for m in members]
    ranks = pareto_ranks(scores, percents)
    front = sorted((m for m, r in zip(members, ranks) if r == 0), key=lambda m: (m.percent, -m.mean))
    seed_sd = estimate_noise([m.scores for m in members]).seed_sd

    def near(m: _Member, rank: int) -> bool:
        if seed_sd is None:
            return rank <= NEAR_RANK
        best = max((f.mean for f in front if f.percent <= m.percent), default=-math.inf)
        return m.mean >= best - NEAR_SDS * seed_sd

    picked = _spread(front, plan.k)
    picked += [m for m, r in zip(members, ranks) if m.standard is not None and near(m, r)]
    if (best := _best_standard(members)) is not None:
        picked.append(best)
    return _unique(picked)


def _unique(members: list[_Member]) -> list[_Member]:
    seen: dict[str, _Member] = {}
    for m in members:
        seen.setdefault(config_key(m.config), m)
    return list(seen.values())


def _survivors(members: list[_Member], keep_standards: bool = False) -> list[_Member]:
    """The ceil(n / 2) best of a rung (non-dominated rank, then mean score), and the best standard module
    (`keep_standards`: every standard module)."""
    scored = [m for m in members if m.scores]
    ranks = pareto_ranks([m.mean for m in scored], [m.percent for m in scored])
    order = sorted(range(len(scored)), key=lambda i: (ranks[i], -scored[i].mean, scored[i].percent))
    keep = [scored[i] for i in order[: math.ceil(len(members) / 2)]]
    if keep_standards:
        keep += [m for m in scored if m.standard is not None]
    elif (best := _best_standard(scored)) is not None:
        keep.append(best)
    return _unique(keep)


@dataclass
class Schedule:
    """Where promotion stands: the evaluations to run now (nobody holds them), whether any are
    running elsewhere, whether it is finished, and the configuration keys of each rung's members so
    far (all rungs when finished)."""

    todo: list[PromotionTask]
    running: bool
    finished: bool
    rung: int  # the rung being evaluated (len(plan.rungs) + 1 when finished)
    ladder: list[set[str]] = field(default_factory=list)


def next_tasks(study: optuna.Study, plan: PromotionPlan) -> Schedule:
    """The evaluations due now, worked out from the study's trials."""
    members = _candidates(study, plan)
    ladder: list[set[str]] = []
    for rung in range(1, len(plan.rungs) + 1):
        ladder.append({config_key(m.config) for m in members})
        done, held, failed = _rung_results(study, rung)
        todo, running = [], False
        for m in members:
            for s in range(plan.seeds(rung)):
                task = PromotionTask(m.config, rung, s, m.standard)
                if task.key in done:
                    continue
                if task.key in held:
                    running = True
                elif task.key not in failed:
                    todo.append(task)
        if todo or running:
            return Schedule(todo, running, False, rung, ladder)
        scored = [_Member(m.config, m.percent, m.standard,
                          [float(done[(config_key(m.config), rung, s)].values[0])
                           for s in range(plan.seeds(rung)) if (config_key(m.config), rung, s) in done])
                  for m in members]
        members = _survivors(scored, plan.keep_standards) if rung < len(plan.rungs) else scored
    return Schedule([], False, True, len(plan.rungs) + 1, ladder)


def answer_members(study: optuna.Study, plan: PromotionPlan, front: bool = True) -> list[dict[str, Any]]:
    """The front at the target fidelity, of the means on the selection split over each member's seeds
    (`front=False`: every member evaluated there with all its seeds). Once the plan's ladder reaches the target,
    only its members there count: a study resumed with another plan or a larger budget may hold other
    configurations' runs at the target.

    One dict per member, sorted by percent: config, standard, fidelity, percent, selection_score
    (mean) and selection_scores, and on the report split score (mean), score_std, scores; n_seeds,
    numbers (the trials) and runs (their saved weights, as `run_dir` returned them).
    """
    rung = len(plan.rungs)
    ladder = next_tasks(study, plan).ladder
    targets = ladder[rung - 1] if len(ladder) == rung and ladder[0] else None  # none: nothing explored
    groups: dict[str, list[FrozenTrial]] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        info = _promotion(t)
        if info is not None and int(info["rung"]) == rung and (
                targets is None or config_key(t.user_attrs[CONFIG_ATTR]) in targets):
            groups.setdefault(config_key(t.user_attrs[CONFIG_ATTR]), []).append(t)
    members = []
    for trials in groups.values():
        if len(trials) < plan.final_seeds:
            continue
        trials.sort(key=lambda t: (int(_promotion(t)["seed_index"]), t.number))
        report = [float(t.user_attrs[REPORT_SCORE_ATTR]) for t in trials]
        selection = [float(t.values[0]) for t in trials]
        members.append({
            "config": trials[0].user_attrs[CONFIG_ATTR], "standard": trials[0].user_attrs.get(STANDARD_ATTR),
            "fidelity": plan.labels[-1], "percent": float(trials[0].values[1]),
            "score": float(np.mean(report)), "score_std": float(np.std(report, ddof=1)), "scores": report,
            "selection_score": float(np.mean(selection)), "selection_scores": selection,
            "n_seeds": len(trials), "numbers": [t.number for t in trials],
            "runs": [t.user_attrs.get("run_dir") for t in trials],
        })
    on = pareto_mask([m["selection_score"] for m in members], [m["percent"] for m in members])
    answer = [m for m, keep in zip(members, on) if keep or not front]
    return sorted(answer, key=lambda m: (m["percent"], -m["selection_score"]))


def run_promotion(
    study: optuna.Study,
    space: SearchSpace,
    plan: PromotionPlan,
    evaluate: Callable[[PeftConfig, optuna.trial.Trial, PromotionTask], Any],
    progress: bool = True,
) -> optuna.Study:
    """Run the due evaluations until promotion is finished (resumable; other workers may share it).

    `evaluate(config, trial, task)` trains and returns a `runner.TrialResult`; it is told like a
    search trial (failures are recorded, not raised).
    """
    from tqdm import tqdm

    from autopeft.search.runner import evaluate_and_tell

    bar = tqdm(desc="promotion", unit="trial", disable=not progress, dynamic_ncols=True)
    heart = Heartbeat(study)
    waiting = False
    with interrupts_recorded(), interrupts_deferred():
        register_worker(study, active=True)
        try:
            while True:
                check_interrupt()
                recover_stale(study, quiet=True)
                schedule = next_tasks(study, plan)
                if schedule.finished:
                    _drop_queued(study)
                    break
                if not schedule.todo:
                    if not waiting:
                        logger.info(f"promotion rung {schedule.rung}: waiting for other workers' evaluations")
                    waiting = True
                    time.sleep(WAIT_POLL_S)
                    continue
                waiting = False
                if not _queued(study, schedule.todo):
                    task = schedule.todo[0]
                    study.enqueue_trial(space.to_params(PeftConfig.from_dict(task.config)), user_attrs={
                        PROMOTION_ATTR: {"rung": task.rung, "seed_index": task.seed_index,
                                         "fidelity": plan.labels[task.rung - 1]},
                        CONFIG_ATTR: task.config, STANDARD_ATTR: task.standard})
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # ours records it
                    trial = study.ask()
                trial.set_user_attr(WORKER_ATTR, this_worker())
                heart.add(optuna_access.trial_id(trial))
                try:
                    frozen = _claim(study, trial)
                    if frozen is None:
                        continue
                    info = frozen.user_attrs[PROMOTION_ATTR]
                    popped = PromotionTask(frozen.user_attrs[CONFIG_ATTR], int(info["rung"]),
                                           int(info["seed_index"]), frozen.user_attrs.get(STANDARD_ATTR))
                    told = evaluate_and_tell(study, trial, PeftConfig.from_dict(popped.config),
                                     lambda c, t, task=popped: evaluate(c, t, task))
                except KeyboardInterrupt:
                    if study.get_trials(deepcopy=False)[trial.number].state == TrialState.RUNNING:
                        fail_trial(study, trial, "interrupted")
                    raise
                finally:
                    heart.discard(optuna_access.trial_id(trial))
                if told.state != TrialState.COMPLETE:
                    logger.warning(f"promoted trial {told.number} failed: {told.user_attrs.get(FAIL_REASON_ATTR)}")
                bar.set_postfix_str(f"rung {popped.rung}/{len(plan.rungs)} ({plan.labels[popped.rung - 1]})")
                bar.update(1)
        finally:
            heart.close()
            bar.close()
            register_worker(study, active=False)
    return study


def _queued(study: optuna.Study, todo: list[PromotionTask]) -> bool:
    """Whether a WAITING trial already holds one of the due evaluations: then this worker asks for it rather than
    queueing another.

    `ask` pops the oldest WAITING trial, which need not be the one this worker queued (another worker's search trial
    given back over budget, or an evaluation queued twice). Queueing only when none is due keeps such extras from
    piling up: each ask takes one of them.
    """
    keys = {task.key for task in todo}
    return any(_task_key(t) in keys for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _drop_queued(study: optuna.Study) -> None:
    """Fail the promoted evaluations still queued once promotion is finished ("not run"); each is taken first, as
    `ask` takes a WAITING trial, so that one another worker has just popped is left to it."""
    storage = optuna_access.storage(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if _task_key(t) is None:
            continue
        try:
            if not storage.set_trial_state_values(optuna_access.trial_id(t), TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker popped and finished it meanwhile
            continue
        fail_trial(study, optuna_access.trial_handle(study, t), "not run: promotion finished before it was asked for")


def _claim(study: optuna.Study, trial: optuna.trial.Trial) -> FrozenTrial | None:
    """The asked trial, unless it is not a promoted evaluation or an earlier trial holds the same one
    (two workers enqueued it at once): then it is failed as "not run" and None returned."""
    frozen = study.get_trials(deepcopy=False)[trial.number]
    key = _task_key(frozen)
    if key is None:
        queued = FIXED_PARAMS_ATTR in frozen.system_attrs  # else a new trial: the queue was empty
        fail_trial(study, trial, "not run: a search trial was queued while promoting; it is not needed now" if queued
                   else "not run: another worker took the queued evaluation first")
        return None
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number < frozen.number and _task_key(t) == key:
            fail_trial(study, trial, f"not run: trial {t.number} holds the same promoted evaluation")
            return None
    return frozen


def check_plan_fits(plan: PromotionPlan, budget: int, n_standards: int, n_init: int) -> int:
    """The exploring part of `budget` once promotion's most is set aside; UserError when too little is left."""
    reserved = plan.max_trials(n_standards)
    explore = budget - reserved
    need = n_standards + max(1, n_init)
    if explore < need:
        raise UserError(f"budget {budget} leaves {explore} trials to explore after promotion reserves {reserved} "
                        f"({plan.k} candidates + {n_standards} standard modules up {len(plan.rungs)} rung(s)); "
                        f"raise budget to at least {reserved + need} or lower promote")
    return explore
