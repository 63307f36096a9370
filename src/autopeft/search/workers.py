"""Workers sharing one study: who runs what, heartbeats, and re-queueing the work of dead ones.

Several workers may share one study: each trial records its worker (host, pid)
and each running search registers itself as a study attribute `worker:<host>:<pid>`.
Before each round, RUNNING trials of dead workers are failed and their configurations
queued to run first (user attr `rerun_of` on the new trial):

- same host: the worker's pid is gone (or, for a trial killed before it recorded a
  worker, no other worker is alive);
- any host: no heartbeat for HEARTBEAT_GRACE intervals. Database storages record
  Optuna's heartbeat (`RDBStorage(heartbeat_interval=...)`, every
  DEFAULT_HEARTBEAT_S by default) and `optuna.storages.fail_stale_trials` finds the
  stale trials. Optuna 5.0's journal storage has no heartbeat: there, trials of
  workers on other hosts are left alone.

A re-queued replicate stays a replicate: two trials hold the same work when they have
the same configuration and the same replicate index (see `search.results`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import warnings
from datetime import datetime, UTC
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.search import optuna_access
from autopeft.search.attrs import (
    DUPLICATE_OF_ATTR,
    FAIL_REASON_ATTR,
    FIXED_PARAMS_ATTR,
    PROMOTION_ATTR,
    PROPOSAL_ATTR,
    REPLICATE_INDEX_ATTR,
    REPLICATE_OF_ATTR,
    RERUN_ATTR,
    WORKER_ATTR,
    WORKER_PREFIX,
)
from autopeft.log import get_logger
from autopeft.search.results import replicate_index, replicate_proposal

logger = get_logger(__name__)

DEFAULT_HEARTBEAT_S = 60  # heartbeat interval of database storages unless --heartbeat says otherwise
HEARTBEAT_GRACE = 3  # a running trial without a heartbeat for this many intervals is stale


# fail_trial serves the runner too; it lives here because the runner imports this module.
def fail_trial(study: optuna.Study, trial: optuna.trial.Trial, reason: str, **attrs: Any) -> FrozenTrial:
    """Tell `trial` FAIL with user attr FAIL_REASON_ATTR = `reason` (and `attrs`)."""
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return study.tell(trial, state=TrialState.FAIL)


def this_worker() -> dict[str, Any]:
    """This process as a worker: {"host", "pid"}."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _other_worker_alive(worker: dict[str, Any] | None) -> bool:
    """Whether `worker` (host, pid) may still be running and is not this process."""
    if not worker:
        return False
    me = this_worker()
    if worker.get("host") != me["host"]:
        return True  # cannot check another host: assume it is alive (the heartbeat decides)
    return worker.get("pid") != me["pid"] and _pid_alive(int(worker.get("pid", -1)))


def _worker_label(worker: dict[str, Any] | None) -> str:
    return f"worker {worker.get('host')}:{worker.get('pid')}" if worker else "an unknown worker"


def _held_params(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial holds: its own, completed by the sampler's stored proposal (a
    running trial) or the queued values (a waiting one)."""
    return {**(trial.system_attrs.get(FIXED_PARAMS_ATTR) or {}), **(trial.system_attrs.get(PROPOSAL_ATTR) or {}),
            **trial.params}


def _rung(trial: FrozenTrial) -> tuple[int, int] | None:
    """(rung, seed index) of a promoted evaluation (search.promotion), None for the search's own trials."""
    promotion = trial.user_attrs.get(PROMOTION_ATTR)
    return (int(promotion["rung"]), int(promotion["seed_index"])) if isinstance(promotion, dict) else None


def held_elsewhere(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """Number of another trial that evaluated, runs or queued `trial`'s work (configuration, replicate index
    and, for a promoted evaluation, its rung and seed)."""
    params, index, rung = _held_params(trial), replicate_index(trial), _rung(trial)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)):
        if (params and t.number != trial.number and DUPLICATE_OF_ATTR not in t.user_attrs
                and _held_params(t) == params and replicate_index(t) == index and _rung(t) == rung):
            return t.number
    return None


def requeue(study: optuna.Study, frozen: FrozenTrial) -> bool:
    """Queue the configuration of a stale, interrupted or given-back trial to run first.

    Not when it has no parameters, or when another trial evaluated, runs or queued it
    (another worker may have re-queued it). The new trial's user attr RERUN_ATTR names
    `frozen`, so that samplers do not take it for a failed configuration.
    """
    params = _held_params(frozen)
    if not params or held_elsewhere(study, frozen) is not None or _rung(frozen) is not None:
        return False  # a promoted evaluation is scheduled again by search.promotion, from the study's state
    if any(t.user_attrs.get(RERUN_ATTR) == frozen.number for t in study.get_trials(deepcopy=False)):
        return False
    replicate = replicate_proposal(frozen)
    extra = {} if replicate is None else {REPLICATE_OF_ATTR: replicate["of"], REPLICATE_INDEX_ATTR: replicate["index"]}
    study.enqueue_trial(params, user_attrs={RERUN_ATTR: frozen.number, **extra})
    return True


def requeue_heartbeat_stale(study: optuna.Study, frozen: FrozenTrial) -> None:
    """Optuna's callback for a trial it failed for want of heartbeats (`fail_stale_trials`)."""
    grace = HEARTBEAT_GRACE * (optuna_access.heartbeat_interval(study) or 0)
    queued = " and queued to run first" if requeue(study, frozen) else ""
    owner = _worker_label(frozen.user_attrs.get(WORKER_ATTR))
    logger.warning(f"trial {frozen.number} ({owner}) sent no heartbeat for over {grace} s: marked FAIL{queued}")


def recover_stale(study: optuna.Study, quiet: bool = False) -> None:
    """Fail the RUNNING trials of dead workers and queue their configurations to run first.

    Same host: the pid check (see the module docstring). Any host: Optuna's heartbeat
    check, whose callback re-queues. `quiet`: do not list the trials left alone.
    """
    others = any(
        _other_worker_alive(w)
        for k, w in study.user_attrs.items()
        if k.startswith(WORKER_PREFIX) and isinstance(w, dict) and w.get("active")
    )
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.user_attrs.get(WORKER_ATTR)
        if _other_worker_alive(owner) or (owner is None and others):
            if not quiet:
                where = _worker_label(owner) if owner else "another live worker"
                logger.info(f"trial {frozen.number} is running in {where}; left alone")
            continue
        try:
            failed = fail_trial(study, optuna_access.trial_handle(study, frozen), "stale: interrupted run")
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        queued = " and queued to run first" if requeue(study, failed) else ""
        logger.warning(f"trial {frozen.number} was left running by an interrupted run: marked FAIL{queued}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without a heartbeat


def register_worker(study: optuna.Study, active: bool) -> None:
    """Record this worker in the study (study attr `worker:<host>:<pid>`), running or not."""
    me = this_worker()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    study.set_user_attr(f"{WORKER_PREFIX}{me['host']}:{me['pid']}", {**me, "active": active, "updated": now})


class Heartbeat:
    """Records the heartbeats of this worker's running trials, in one background thread.

    Optuna records heartbeats only inside `Study.optimize`; this search asks and tells,
    so it calls the storage's own `record_heartbeat` itself: when a trial is asked, then
    every interval until it is told. A failed write is retried at the next beat.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._storage = optuna_access.storage(study)
        self.interval: int | None = optuna_access.heartbeat_interval(study)
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if not self.interval:
            return
        self._beat(trial_id)
        with self._lock:
            self._ids.add(trial_id)
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="autopeft-heartbeat", daemon=True)
            self._thread.start()

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._ids.discard(trial_id)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self._ids)
            for trial_id in ids:
                self._beat(trial_id)

    def _beat(self, trial_id: int) -> None:
        # e.g. a busy database: HEARTBEAT_GRACE intervals leave room to retry
        with contextlib.suppress(Exception):
            self._storage.record_heartbeat(trial_id)
