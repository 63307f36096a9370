"""The search loop: ask proposals, evaluate them, tell the results, until the budget is met.

The budget counts the trials running in every worker: a worker asks only for what is
left, and waits while the rest of the budget is running elsewhere. Before each round,
RUNNING trials of dead workers are failed and their configurations queued to run first
(`workers.recover_stale`).
"""

from __future__ import annotations

import gc
import math
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import (
    UserError,
    check_interrupt,
    disk_full_reason,
    interrupts_deferred,
    interrupts_immediate,
    interrupts_recorded,
)
from autopeft.log import get_logger
from autopeft.search import optuna_access
from autopeft.search.attrs import (
    BUDGET_ATTR,
    CONFIG_ATTR,
    DUPLICATE_OF_ATTR,
    FAIL_REASON_ATTR,
    PROMOTION_ATTR,
    REPLICATE_INDEX_ATTR,
    REPLICATE_OF_ATTR,
    WORKER_ATTR,
)
from autopeft.search.noise import estimate_noise, format_share
from autopeft.search.pareto import hypervolume, pareto_mask
from autopeft.search.record import StudyRecord
from autopeft.search.results import config_key, config_rows, reference_point, replicate_index, replicate_proposal
from autopeft.search.storage import as_stored
from autopeft.search.workers import (
    Heartbeat,
    fail_trial,
    held_elsewhere,
    recover_stale,
    register_worker,
    requeue,
    this_worker,
)
from autopeft.space import PeftConfig, SearchSpace

logger = get_logger(__name__)

MAX_CONSECUTIVE_SKIPS = 50  # proposals not evaluated (duplicates, invalid) in a row
MAX_CONSECUTIVE_FAILURES = 10  # evaluations raising in a row
RESUME_HINT = "run the same search command again (same --study name and --out dir / storage) to resume"
WAIT_POLL_S = 2.0  # how often a worker with nothing left to ask looks at the study again
OOM_HINT = "try a smaller --batch-size or --max-length"


@dataclass
class TrialResult:
    """What an evaluation returns: objectives plus what is worth keeping."""

    score: float
    percent: float
    metrics: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = 0.0
    trainable_params: int = 0
    extra: dict = field(default_factory=dict)


def _is_evaluated(trial: FrozenTrial) -> bool:
    """A COMPLETE trial of the search itself: not a duplicate, not a promoted evaluation."""
    return (trial.state == TrialState.COMPLETE and DUPLICATE_OF_ATTR not in trial.user_attrs
            and PROMOTION_ATTR not in trial.user_attrs)


def _n_done(study: optuna.Study) -> int:
    """COMPLETE trials that were evaluated (duplicates do not count)."""
    return sum(_is_evaluated(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _progress_postfix(study: optuna.Study, ref: tuple[float, float], score: float, percent: float) -> str:
    """The progress bar's text: the front of means (size, hypervolume), the last trial, the seed noise."""
    rows = config_rows(study)
    s, p = [r["score"] for r in rows], [r["percent"] for r in rows]
    text = f"front {int(pareto_mask(s, p).sum())}, HV {hypervolume(s, p, *ref):.4g}, last {score:.2f} @ {percent:.3g}%"
    noise = estimate_noise([r["scores"] for r in rows])
    if noise.seed_sd is not None:
        text += f", seed SD {noise.seed_sd:.2f}, config share {format_share(noise.config_share)}"
    return text


def _frozen(study: optuna.Study, trial: optuna.trial.Trial) -> FrozenTrial:
    """The stored state of `trial` now."""
    return study.get_trials(deepcopy=False)[trial.number]


def _interrupted(study: optuna.Study, trials: list[optuna.trial.Trial]) -> None:
    """Fail those of `trials` still running ("interrupted") and queue their configurations to run first."""
    for trial in trials:
        if _frozen(study, trial).state == TrialState.RUNNING:
            requeue(study, fail_trial(study, trial, "interrupted"))


def _over_budget(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial `number` finds no room: evaluated trials + running or queued ones numbered up to it.

    Every worker orders the trials in flight by number, so concurrent askers agree on
    which of them fit.
    """
    trials = study.get_trials(deepcopy=False)
    ahead = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number <= number
                and PROMOTION_ATTR not in t.user_attrs for t in trials)
    return sum(map(_is_evaluated, trials)) + ahead > budget


def _failed_as_stale_elsewhere(study: optuna.Study, trial: optuna.trial.Trial) -> bool:
    """Whether another worker failed this worker's running trial as stale (late heartbeats)."""
    frozen = _frozen(study, trial)
    return frozen.state == TrialState.FAIL and FAIL_REASON_ATTR not in frozen.user_attrs


def _evaluated_configs(study: optuna.Study, space: SearchSpace) -> dict[str, int]:
    """Config key -> number of the first COMPLETE trial with that configuration (not a duplicate or replicate)."""
    done: dict[str, int] = {}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if _is_evaluated(frozen) and replicate_index(frozen) == 0:
            config = frozen.user_attrs.get(CONFIG_ATTR) or space.from_params(frozen.params)
            done.setdefault(config_key(config), frozen.number)
    return done


def _ask(
    study: optuna.Study, space: SearchSpace, heart: Heartbeat, budget: int
) -> tuple[optuna.trial.Trial, PeftConfig, float] | None:
    """Ask a trial and its configuration (and proposal seconds); None when the budget has no room."""
    with warnings.catch_warnings(), interrupts_deferred():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # our Heartbeat records it
        trial = study.ask()
    try:
        check_interrupt()  # one that landed in ask(), now that the trial can be failed
        trial.set_user_attr(WORKER_ATTR, this_worker())
        heart.add(optuna_access.trial_id(trial))
        if PROMOTION_ATTR in trial.user_attrs:  # queued by a promoting worker that was killed: promotion redoes it
            fail_trial(study, trial, "not run: a promoted evaluation left queued; promotion schedules it again")
            heart.discard(optuna_access.trial_id(trial))
            return _ask(study, space, heart, budget)
        if _over_budget(study, trial.number, budget):
            # Another worker asked at the same moment: give this trial back (and what it popped from the queue).
            requeue(study, fail_trial(study, trial, "not run: the rest of the budget went to trials of other workers"))
            heart.discard(optuna_access.trial_id(trial))
            return None
        start = time.perf_counter()
        for name, dist in space.optuna_distributions().items():
            trial.suggest_categorical(name, dist.choices)
        measured = time.perf_counter() - start
    except KeyboardInterrupt:
        _interrupted(study, [trial])
        raise
    reported = getattr(study.sampler, "last_proposal_seconds", None)
    return trial, space.from_params(trial.params), float(measured if reported is None else reported)


def run_search(
    study: optuna.Study,
    space: SearchSpace,
    evaluate: Callable[[PeftConfig, optuna.trial.Trial], TrialResult],
    budget: int,
    batch: int = 1,
    progress: bool = True,
    on_trial_end: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ref: tuple[float, float] | None = None,
) -> optuna.Study:
    """Evaluate proposals until `budget` configurations have been evaluated (COMPLETE).

    Each round asks `batch` trials (BO samplers see the unevaluated ones as
    pending), then evaluates and tells them in order. A proposal equal to an
    evaluated configuration is told with the stored values (`duplicate_of`) and
    not counted; an invalid one is told FAIL without evaluating; an exception in
    `evaluate` is told FAIL with `fail_reason` (out of memory: "out of memory: ..."
    and a hint) and the search goes on.
    `on_trial_end(study, frozen_trial)` is called after every tell. `ref` is the
    hypervolume reference point shown in the progress bar (default: the study's).
    Other workers: their running trials count against the budget; with nothing
    left to ask, this one waits for them (their trials may fail or go stale).
    Resuming: completed trials are kept, RUNNING ones of dead workers are
    failed and re-run first (checked every round). On Ctrl-C the trial being
    evaluated (and the rest of its batch) is told FAIL ("interrupted") and queued
    the same way, then the KeyboardInterrupt is re-raised; a Ctrl-C recorded by
    `errors.interrupts_recorded` but swallowed by Python stops it before the next trial.
    A Ctrl-C outside `evaluate`, e.g. during `study.ask()` (which holds the sampler's
    proposal) or a storage write, takes effect when that step returns.
    """
    for name, value in (("budget", budget), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    size = space.n_valid()
    if budget > size:
        logger.warning(f"the search space holds only {size} valid configurations; "
                       f"budget lowered from {budget} to {size}")
        budget = size

    recover_stale(study)  # also when the budget is met already
    if study.user_attrs.get(BUDGET_ATTR) != budget:
        study.set_user_attr(BUDGET_ATTR, budget)  # the BO samplers cap their replicates by it
    record = StudyRecord.of(study)
    attrs = {"seed": record.seed, "sampler": record.sampler}  # stored on each trial
    ref = ref or reference_point(study)

    from tqdm import tqdm

    n_done = _n_done(study)
    bar = tqdm(total=budget, initial=min(n_done, budget), disable=not progress, unit="trial", dynamic_ncols=True)
    skips = failures = 0
    waiting = False
    heart = Heartbeat(study)

    def finish(frozen: FrozenTrial) -> None:
        if on_trial_end is not None:
            on_trial_end(study, frozen)

    # A Ctrl-C is held everywhere but inside `evaluate`, so that none cuts a storage write in
    # half; the loop's check_interrupt calls act on it.
    with interrupts_recorded(), interrupts_deferred():
        register_worker(study, active=True)
        try:
            while (n_done := _n_done(study)) < budget:  # re-read: other workers may add trials
                bar.update(min(n_done, budget) - bar.n)
                recover_stale(study, quiet=True)
                running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
                asked: list[tuple[optuna.trial.Trial, PeftConfig, float]] = []
                try:  # a Ctrl-C anywhere in the round fails (and re-queues) the asked trials not yet told
                    check_interrupt()
                    for _ in range(min(batch, budget - n_done - running)):
                        if (one := _ask(study, space, heart, budget)) is None:
                            break
                        asked.append(one)
                    if not asked:
                        if not waiting:
                            logger.info(f"{n_done} trials done; the rest of the budget of {budget} is running in other "
                                   "workers: waiting for them (a dead worker's trial is run again here)")
                        waiting = True
                        time.sleep(WAIT_POLL_S)
                        continue
                    waiting = False
                    done = _evaluated_configs(study, space)
                    for trial, config, proposal_s in asked:
                        try:
                            check_interrupt()
                            outcome, told = _tell_one(study, space, trial, config,
                                                      {**attrs, "proposal_seconds": proposal_s}, done, evaluate, finish)
                        finally:
                            heart.discard(optuna_access.trial_id(trial))
                        if outcome == "skipped":
                            skips += 1
                        elif outcome == "complete":
                            skips = failures = 0
                            n_done += 1
                            score, percent = told.values
                            bar.set_postfix_str(_progress_postfix(study, ref, score, percent))
                            bar.update(1)
                        elif outcome == "failed":
                            skips, failures = 0, failures + 1
                            if failures >= MAX_CONSECUTIVE_FAILURES:
                                last = told.user_attrs.get(FAIL_REASON_ATTR)
                                raise UserError(f"{failures} evaluations in a row failed (last: {last}); "
                                                f"fix the cause, then {RESUME_HINT}")
                except KeyboardInterrupt:
                    _interrupted(study, [t for t, _, _ in asked])
                    raise
                if skips >= MAX_CONSECUTIVE_SKIPS:
                    logger.warning(
                        f"stopping: the last {skips} proposals were duplicates of evaluated configurations or invalid; "
                        f"the sampler has little left to propose ({n_done} of {size} configurations evaluated)"
                    )
                    break
        except KeyboardInterrupt:
            logger.warning(f"interrupted after {n_done} completed trials; completed trials are kept: {RESUME_HINT}")
            raise
        finally:
            heart.close()
            bar.close()
            register_worker(study, active=False)
    return study


def _tell_one(
    study: optuna.Study,
    space: SearchSpace,
    trial: optuna.trial.Trial,
    config: PeftConfig,
    attrs: dict[str, Any],
    done: dict[str, int],
    evaluate: Callable[[PeftConfig, optuna.trial.Trial], TrialResult],
    finish: Callable[[FrozenTrial], None],
) -> tuple[str, FrozenTrial | None]:
    """Evaluate one asked trial (or skip it) and tell it; `done` gains a completed configuration.

    Returns the outcome and, when evaluated, the told trial: ("complete" | "failed",
    FrozenTrial), or ("skipped", None) for a duplicate of an evaluated configuration, an
    invalid one, or one another trial holds, or ("lost", None) when another worker
    failed it as stale meanwhile.
    """
    try:
        for name, value in {CONFIG_ATTR: config.to_dict(), **attrs}.items():
            trial.set_user_attr(name, value)
        key = config_key(config)
        replicate = replicate_proposal(_frozen(study, trial))
        if replicate is not None:
            trial.set_user_attr(REPLICATE_OF_ATTR, replicate["of"])
            trial.set_user_attr(REPLICATE_INDEX_ATTR, replicate["index"])
        elif key in done:
            first = study.get_trials(deepcopy=False)[done[key]]
            trial.set_user_attr(DUPLICATE_OF_ATTR, done[key])
            for name in ("score", "percent", "metrics", "trainable_params"):
                trial.set_user_attr(name, first.user_attrs.get(name))
            finish(study.tell(trial, first.values))
            return "skipped", None
        if not space.contains(config):
            finish(fail_trial(study, trial, "invalid configuration proposed: " + _invalid_reason(space, config)))
            return "skipped", None
        if (other := held_elsewhere(study, _frozen(study, trial))) is not None:
            # Another worker proposed it at the same moment (each saw the other's proposal too
            # late to count it as pending); of two such trials, at least one sees the other here.
            finish(fail_trial(study, trial, f"not run: trial {other} has the same configuration"))
            return "skipped", None
        frozen = evaluate_and_tell(study, trial, config, evaluate)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        if not _failed_as_stale_elsewhere(study, trial):
            raise
        logger.warning(f"trial {trial.number} was failed as stale by another worker (late heartbeats) and queued "
                       "again; its result here is dropped")
        return "lost", None
    if frozen.state != TrialState.COMPLETE:
        logger.warning(f"trial {frozen.number} failed: {frozen.user_attrs[FAIL_REASON_ATTR]}")
    elif replicate is None:
        done[key] = frozen.number
    finish(frozen)
    return ("complete" if frozen.state == TrialState.COMPLETE else "failed"), frozen


def _invalid_reason(space: SearchSpace, config: PeftConfig) -> str:
    try:
        space.check(config)
    except UserError as exc:
        return str(exc)
    return "unknown"


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: MemoryError, torch.OutOfMemoryError, or an allocator's RuntimeError."""
    torch = sys.modules.get("torch")
    if isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError)):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text for s in ("can't allocate memory", "DefaultCPUAllocator", "out of memory")
    )


def evaluate_and_tell(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    config: PeftConfig,
    evaluate: Callable[[PeftConfig, optuna.trial.Trial], TrialResult],
) -> FrozenTrial:
    """Run `evaluate` and tell the outcome (COMPLETE, or FAIL with a reason); a full disk (`errors.disk_full_reason`)
    is raised, not told."""
    oom = False
    try:
        with interrupts_immediate():
            result = evaluate(config, trial)
        score, percent = float(result.score), float(result.percent)
        if not (math.isfinite(score) and math.isfinite(percent)):
            raise ValueError(f"evaluation returned a non-finite objective (score={score}, percent={percent})")
    except Exception as exc:  # noqa: BLE001 - any failure of one trial must not stop the search
        if disk_full_reason(exc) is not None:
            raise  # every trial would fail so: stop; the trial, left RUNNING, runs again on resume (recover_stale)
        reason = f"{type(exc).__name__}: {exc}"
        oom = _out_of_memory(exc)
        if oom:
            reason = f"out of memory: {reason} ({OOM_HINT})"
        failed = (reason, traceback.format_exc()[-4000:])
    else:
        failed = None
    if failed is not None:
        if oom:  # the exception and its frames are gone now: free what the trial held
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
        return fail_trial(study, trial, failed[0], fail_traceback=failed[1])
    for name, value in (
        ("score", score),
        ("percent", percent),
        ("metrics", as_stored(result.metrics)),
        ("trainable_params", int(result.trainable_params)),
        ("wall_time_s", float(result.wall_time_s)),
        ("extra", as_stored(result.extra)),
    ):
        trial.set_user_attr(name, value)
    return study.tell(trial, [score, percent])
