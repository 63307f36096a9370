"""Study storage and the search loop.

A study holds one search: objectives (score to maximise, % trainable
parameters to minimise), its metadata as study user attributes, and one Optuna
trial per evaluated configuration with the results as trial user attributes.

Storage: a SQLite file `<out_dir>/study.db` by default, any SQLAlchemy URL
(`sqlite://`, `postgresql://`, `mysql://`), or an append-only journal file
(`*.log`, `*.journal` or `journal:<path>`).

Several workers may share one study: each trial records its worker (host, pid)
and each running search registers itself as a study attribute `worker:<host>:<pid>`.
The budget counts the trials running in every worker: a worker asks only for what
is left, and waits while the rest of the budget is running elsewhere. Before each
round, RUNNING trials of dead workers are failed and their configurations queued
to run first (user attr `rerun_of` on the new trial):

- same host: the worker's pid is gone (or, for a trial killed before it recorded a
  worker, no other worker is alive);
- any host: no heartbeat for HEARTBEAT_GRACE intervals. Database storages record
  Optuna's heartbeat (`RDBStorage(heartbeat_interval=...)`, every
  DEFAULT_HEARTBEAT_S by default) and `optuna.storages.fail_stale_trials` finds the
  stale trials. Optuna 5.0's journal storage has no heartbeat: there, trials of
  workers on other hosts are left alone.

Replicates: a BO sampler may propose an evaluated configuration again, to train it with
another seed (system attr REPLICATE_ATTR = {"of": first trial, "index": k}). Such a trial is
evaluated, not told as a duplicate; it carries the user attrs `replicate_of` and
`replicate_index` (k = 1, 2, ...; the first evaluation is 0), counts against the budget,
and keeps them when it is re-queued. Two trials hold the same work when they have the same
configuration and the same replicate index. The evaluation trains with seed
`fidelity.seed + replicate_index(trial)`; the front reports each configuration's mean.

SQLite storages take the write lock at the start of every transaction, so that
Optuna's read-then-write updates (popping a queued trial, failing a stale one) are
atomic between processes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, UTC
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import UserError, check_interrupt, interrupts_deferred, interrupts_immediate, interrupts_recorded
from autopeft.search.noise import NoiseEstimate, estimate_noise, format_share
from autopeft.search.pareto import hypervolume, pareto_mask
from autopeft.search import optuna_access
from autopeft.search.attrs import (
    BUDGET_ATTR,
    CONFIG_ATTR,
    DUPLICATE_OF_ATTR,
    FAIL_REASON_ATTR,
    FIXED_PARAMS_ATTR,
    PROPOSAL_ATTR,
    REPLICATE_ATTR,
    REPLICATE_INDEX_ATTR,
    REPLICATE_OF_ATTR,
    RERUN_ATTR,
    RETRAINED_ATTR,
    WORKER_ATTR,
    WORKER_PREFIX,
)
from autopeft.space import PeftConfig, SearchSpace, size_keys

DIRECTIONS = ["maximize", "minimize"]  # values = (score, percent)
# Metadata keys that must match when a stored study is resumed.
COMPARED_KEYS = ("model", "model_weights", "task", "task_identity", "space", "fidelity", "objectives")
MAX_CONSECUTIVE_SKIPS = 50  # proposals not evaluated (duplicates, invalid) in a row
MAX_CONSECUTIVE_FAILURES = 10  # evaluations raising in a row
RESUME_HINT = "run the same search command again (same --study name and --out dir / storage) to resume"
DEFAULT_HEARTBEAT_S = 60  # heartbeat interval of database storages unless --heartbeat says otherwise
HEARTBEAT_GRACE = 3  # a running trial without a heartbeat for this many intervals is stale
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


# --- storage --------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """`value` as it comes back from storage (tuples -> lists, numpy -> Python, keys -> str)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, (np.generic, np.ndarray)):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.loads(json.dumps(value, default=default, sort_keys=True))


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used in messages
        return url


def make_storage(storage: str | None, out_dir: Path, heartbeat: int | None = 0) -> optuna.storages.BaseStorage:
    """Open the storage named by `storage` (None: `<out_dir>/study.db`).

    `heartbeat`: seconds between heartbeats of running trials (database storages; a
    trial is stale after HEARTBEAT_GRACE intervals without one); 0: none; None:
    DEFAULT_HEARTBEAT_S for a database, none for a journal file.
    """
    if heartbeat is not None and (isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 0):
        raise UserError(f"--heartbeat must be a whole number of seconds >= 0 (0: off), got {heartbeat!r}")
    if storage is None:
        storage = f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"
    journal = storage[len("journal:"):] if storage.startswith("journal:") else None
    if journal is None and "://" not in storage and storage.endswith((".log", ".journal")):
        journal = storage
    if journal is not None and heartbeat:
        raise UserError(
            f"--heartbeat needs a database storage (sqlite:///..., postgresql://..., mysql://...): Optuna's journal "
            f"storage {journal} records no heartbeats. Leave --heartbeat out (dead workers on this host are still "
            "found by their pid) or use a database"
        )
    try:
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            path = Path(journal).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if "://" not in storage and storage.endswith((".db", ".sqlite", ".sqlite3")):
            storage = f"sqlite:///{Path(storage).expanduser().resolve()}"
        scheme = storage.split("://", 1)[0].split("+", 1)[0] if "://" in storage else ""
        if scheme not in ("sqlite", "postgresql", "mysql"):
            raise UserError(
                f"storage {storage!r} is not understood; give a database URL (sqlite:///path.db, "
                "postgresql://..., mysql://...), a journal file (*.log, *.journal or journal:<path>), "
                "or nothing for <out>/study.db"
            )
        return _open_rdb(storage, DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - drivers raise many kinds
        shown = journal if journal is not None else _safe_url(storage)
        raise UserError(f"cannot open study storage {shown}: {type(exc).__name__}: {exc}") from None


def _open_rdb(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """An RDBStorage, with Optuna's heartbeat when `heartbeat` > 0 (stale trials re-queued)."""
    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if sqlite else {}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=HEARTBEAT_GRACE * heartbeat,
                      heartbeat_stale_trial_callback=_requeue_heartbeat_stale)
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                rdb = optuna.storages.RDBStorage(url, **kwargs)
            break
        except Exception as exc:
            # Workers started together on a new database race to create its tables; the losers retry.
            text = f"{exc} {exc.__cause__}"
            if attempt == 5 or not any(s in text for s in ("already exists", "UNIQUE constraint", "duplicate key")):
                raise
            time.sleep(0.2 * (attempt + 1))
    if sqlite:
        _serialise_sqlite(rdb.engine)
    return rdb


def _serialise_sqlite(engine: Any) -> None:
    """Make every transaction on `engine` start with BEGIN IMMEDIATE (SQLAlchemy's recipe).

    pysqlite begins a transaction only at the first write, so Optuna's check-then-update
    (pop a WAITING trial, fail a RUNNING one) could succeed in two processes at once.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the hooks


def stored_study_attrs(storage: str | None, study_name: str, out_dir: Path) -> dict[str, Any] | None:
    """The user attrs of the stored study `study_name`, or None when there is none yet (nothing is created)."""
    if storage is None and not (Path(out_dir) / "study.db").is_file():
        return None
    store = make_storage(storage, Path(out_dir), heartbeat=0)
    try:
        return store.get_study_user_attrs(store.get_study_id_from_name(study_name))
    except KeyError:
        return None


def open_study(
    storage: str | None,
    study_name: str,
    out_dir: Path,
    metadata: dict[str, Any],
    sampler: optuna.samplers.BaseSampler | None,
    heartbeat: int | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists and its metadata match.

    `metadata` (model, task, space, fidelity, objectives, sampler, seed, and
    optionally `reference_point` = [score, percent]) is stored as study user
    attributes on creation. On load, a difference in any of COMPARED_KEYS raises
    UserError and nothing is written; other keys (sampler, seed, ...) are updated
    to describe the current run; missing ones (a worker that started while another
    was creating the study) are added. `heartbeat`: see `make_storage`.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out_dir}: {exc.strerror}; "
                        "pass a writable --out dir") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output directory {out_dir} is not writable; pass a writable --out dir")
    store = make_storage(storage, out_dir, heartbeat)
    new = _jsonable(metadata)
    try:
        store.get_study_id_from_name(study_name)
        exists = True
    except KeyError:
        exists = False

    if not exists:
        try:
            study = optuna.create_study(storage=store, study_name=study_name, sampler=sampler, directions=DIRECTIONS)
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another worker created it just now: load it
        else:
            for key, value in new.items():
                study.set_user_attr(key, value)
            return study

    study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler)
    old = study.user_attrs
    if [d.name.lower() for d in study.directions] != ["maximize", "minimize"]:
        raise UserError(
            f"study '{study_name}' has directions {[d.name.lower() for d in study.directions]}, not "
            f"{DIRECTIONS}; it was not made by autopeft. Use a new --study name or --out dir"
        )
    # A key not stored yet is not a difference: its creator is still writing it, or crashed before.
    differ = [k for k in COMPARED_KEYS if k in old and old[k] != new.get(k)]
    if differ:
        lines = "; ".join(_difference(k, old.get(k), new.get(k)) for k in differ)
        raise UserError(
            f"study '{study_name}' already exists with a different {', '.join(differ)} ({lines}). "
            "Use a new --study name or a new --out dir to start another search, or rerun with the "
            "original settings to resume it"
        )
    for key, value in new.items():
        if old.get(key) != value:
            study.set_user_attr(key, value)
    return study


def _difference(key: str, stored: Any, new: Any) -> str:
    """'key: stored X vs new Y', naming only the differing fields of a dict."""
    if isinstance(stored, dict) and isinstance(new, dict):
        fields = [f for f in dict.fromkeys([*stored, *new]) if stored.get(f) != new.get(f)]
        return "; ".join(f"{key}.{f}: stored {json.dumps(stored.get(f))} vs new {json.dumps(new.get(f))}"
                         for f in fields)
    return f"{key}: stored {json.dumps(stored)} vs new {json.dumps(new)}"


# --- rows -----------------------------------------------------------------------------


def _config_key(config: PeftConfig | dict[str, Any]) -> str:
    data = config.to_dict() if isinstance(config, PeftConfig) else PeftConfig.from_dict(config).to_dict()
    return json.dumps(data, sort_keys=True)


def _row(trial: FrozenTrial, retrained: dict[str, Any]) -> dict[str, Any]:
    attrs = trial.user_attrs
    row = {
        "number": trial.number,
        "config": attrs.get(CONFIG_ATTR),
        "score": float(trial.values[0]),
        "percent": float(trial.values[1]),
        "trainable_params": attrs.get("trainable_params"),
        "metrics": attrs.get("metrics", {}),
        "wall_time_s": attrs.get("wall_time_s"),
        "proposal_seconds": attrs.get("proposal_seconds"),
        "seed": attrs.get("seed"),
        "extra": attrs.get("extra", {}),
    }
    if DUPLICATE_OF_ATTR in attrs:
        row[DUPLICATE_OF_ATTR] = attrs[DUPLICATE_OF_ATTR]
    if REPLICATE_OF_ATTR in attrs:
        row[REPLICATE_OF_ATTR] = attrs[REPLICATE_OF_ATTR]
    row[REPLICATE_INDEX_ATTR] = int(attrs.get(REPLICATE_INDEX_ATTR, 0))
    row["train_seed"] = attrs.get("train_seed")
    info = retrained.get(str(trial.number))
    if info:
        row["retrained_mean"] = info.get("mean")
        row["retrained_std"] = info.get("std")
        row["retrained_scores"] = info.get("scores")
    return row


def completed_trials(study: optuna.Study, include_duplicates: bool = False) -> list[dict[str, Any]]:
    """One row per COMPLETE trial in trial order (duplicates left out unless asked).

    Keys: number, config (dict), score, percent, trainable_params, metrics,
    wall_time_s, proposal_seconds, seed (the sampler's), train_seed, replicate_index,
    extra; `duplicate_of` for duplicates, `replicate_of` for replicates;
    retrained_mean / retrained_std / retrained_scores when recorded.
    """
    retrained = study.user_attrs.get(RETRAINED_ATTR, {})
    rows = [
        _row(t, retrained)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if include_duplicates or DUPLICATE_OF_ATTR not in t.user_attrs
    ]
    return sorted(rows, key=lambda r: r["number"])


def config_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per evaluated configuration: its trials (first evaluation and replicates) merged.

    The row of its first trial (number, config, percent, ...), with ``score`` = the mean over
    its seeds, ``score_std`` (ddof 1; 0 for one seed), ``n_seeds``, ``scores`` and
    ``numbers`` (trial order), ``seeds`` (training seeds) and ``metrics`` averaged over seeds.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in completed_trials(study):
        groups.setdefault(_config_key(row["config"]), []).append(row)
    out = []
    for trials in groups.values():
        trials.sort(key=lambda r: (r[REPLICATE_INDEX_ATTR], r["number"]))
        scores = [r["score"] for r in trials]
        names = {k for r in trials for k in r["metrics"]}
        metrics = {k: float(np.mean([r["metrics"][k] for r in trials if k in r["metrics"]])) for k in sorted(names)}
        out.append({**trials[0], "score": float(np.mean(scores)),
                    "score_std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
                    "n_seeds": len(scores), "scores": scores, "numbers": [r["number"] for r in trials],
                    "seeds": [r["train_seed"] for r in trials], "metrics": metrics})
    return sorted(out, key=lambda r: r["number"])


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto front of configuration means (`config_rows`), sorted by percent ascending (then score descending)."""
    rows = config_rows(study)
    if not rows:
        return []
    mask = pareto_mask([r["score"] for r in rows], [r["percent"] for r in rows])
    return sorted((r for r, m in zip(rows, mask) if m), key=lambda r: (r["percent"], -r["score"], r["number"]))


def noise_estimate(study: optuna.Study) -> NoiseEstimate:
    """Seed noise of the study's scores, from its configurations with several seeds (`noise.estimate_noise`)."""
    return estimate_noise([r["scores"] for r in config_rows(study)])


def record_retrained(study: optuna.Study, number: int, scores: list[float]) -> None:
    """Store full-fidelity retraining scores of trial `number` (study attr `retrained`)."""
    scores = [float(s) for s in scores]
    retrained = dict(study.user_attrs.get(RETRAINED_ATTR, {}))
    retrained[str(number)] = {
        "scores": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
    }
    study.set_user_attr(RETRAINED_ATTR, retrained)


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """The study's hypervolume reference point.

    The stored `reference_point` metadata (see pareto.default_reference_point);
    without it, (0, largest observed percent) — a display-only fallback.
    """
    ref = study.user_attrs.get("reference_point")
    if ref is not None:
        return float(ref[0]), float(ref[1])
    percents = [r["percent"] for r in completed_trials(study)]
    return 0.0, max(percents, default=100.0)


def _progress_postfix(study: optuna.Study, ref: tuple[float, float], score: float, percent: float) -> str:
    """The progress bar's text: the front of means (size, hypervolume), the last trial, the seed noise."""
    rows = config_rows(study)
    s, p = [r["score"] for r in rows], [r["percent"] for r in rows]
    text = f"front {int(pareto_mask(s, p).sum())}, HV {hypervolume(s, p, *ref):.4g}, last {score:.2f} @ {percent:.3g}%"
    noise = estimate_noise([r["scores"] for r in rows])
    if noise.seed_sd is not None:
        text += f", seed SD {noise.seed_sd:.2f}, config share {format_share(noise.config_share)}"
    return text


# --- search ---------------------------------------------------------------------------


def n_valid_configs(space: SearchSpace) -> int:
    """Number of valid configurations in the space (at least one module and one layer on)."""
    combos = math.prod(len(space.choices(k)) for k in size_keys())
    all_off = int(all(0 in space.choices(k) for k in size_keys()))
    layer_combos = 2 ** len(space.searched_layers) - int(not any(f is True for f in space.fixed_layers))
    return (combos - all_off) * layer_combos


def _notify(message: str) -> None:
    """A status line on stderr, above the progress bar."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _is_evaluated(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.COMPLETE and DUPLICATE_OF_ATTR not in trial.user_attrs


def _n_done(study: optuna.Study) -> int:
    """COMPLETE trials that were evaluated (duplicates do not count)."""
    return sum(_is_evaluated(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _fail(study: optuna.Study, trial: optuna.trial.Trial, reason: str, **attrs: Any) -> FrozenTrial:
    trial.set_user_attr(FAIL_REASON_ATTR, reason)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return study.tell(trial, state=TrialState.FAIL)


def _this_worker() -> dict[str, Any]:
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
    me = _this_worker()
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


def _replicate_proposal(trial: FrozenTrial | optuna.trial.Trial) -> dict[str, int] | None:
    """{"of": first trial, "index": k} when `trial` is a replicate, else None.

    From the user attrs (set when the trial is evaluated, and carried by a re-queued trial),
    else from the sampler's proposal (system attr REPLICATE_ATTR of a FrozenTrial; a live Trial
    being evaluated has the user attrs).
    """
    attrs = trial.user_attrs
    if REPLICATE_OF_ATTR in attrs:
        return {"of": int(attrs[REPLICATE_OF_ATTR]), "index": int(attrs[REPLICATE_INDEX_ATTR])}
    proposal = (getattr(trial, "system_attrs", None) or {}).get(REPLICATE_ATTR)
    return {"of": int(proposal["of"]), "index": int(proposal["index"])} if isinstance(proposal, dict) else None


def replicate_index(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """Which evaluation of its configuration `trial` is: 0 for the first, k for the k-th replicate."""
    proposal = _replicate_proposal(trial)
    return 0 if proposal is None else proposal["index"]


def _held_elsewhere(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """Number of another trial that evaluated, runs or queued `trial`'s work (configuration and replicate index)."""
    params, index = _held_params(trial), replicate_index(trial)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)):
        if (params and t.number != trial.number and DUPLICATE_OF_ATTR not in t.user_attrs
                and _held_params(t) == params and replicate_index(t) == index):
            return t.number
    return None


def _requeue(study: optuna.Study, frozen: FrozenTrial) -> bool:
    """Queue the configuration of a stale, interrupted or given-back trial to run first.

    Not when it has no parameters, or when another trial evaluated, runs or queued it
    (another worker may have re-queued it). The new trial's user attr RERUN_ATTR names
    `frozen`, so that samplers do not take it for a failed configuration.
    """
    params = _held_params(frozen)
    if not params or _held_elsewhere(study, frozen) is not None:
        return False
    if any(t.user_attrs.get(RERUN_ATTR) == frozen.number for t in study.get_trials(deepcopy=False)):
        return False
    replicate = _replicate_proposal(frozen)
    extra = {} if replicate is None else {REPLICATE_OF_ATTR: replicate["of"], REPLICATE_INDEX_ATTR: replicate["index"]}
    study.enqueue_trial(params, user_attrs={RERUN_ATTR: frozen.number, **extra})
    return True


def _requeue_heartbeat_stale(study: optuna.Study, frozen: FrozenTrial) -> None:
    """Optuna's callback for a trial it failed for want of heartbeats (`fail_stale_trials`)."""
    grace = HEARTBEAT_GRACE * (optuna_access.heartbeat_interval(study) or 0)
    queued = " and queued to run first" if _requeue(study, frozen) else ""
    owner = _worker_label(frozen.user_attrs.get(WORKER_ATTR))
    _notify(f"trial {frozen.number} ({owner}) sent no heartbeat for over {grace} s: marked FAIL{queued}")


def _recover_stale(study: optuna.Study, quiet: bool = False) -> None:
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
                _notify(f"trial {frozen.number} is running in {where}; left alone")
            continue
        try:
            failed = _fail(study, optuna_access.trial_handle(study, frozen), "stale: interrupted run")
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            continue  # another worker failed it first
        queued = " and queued to run first" if _requeue(study, failed) else ""
        _notify(f"trial {frozen.number} was left running by an interrupted run: marked FAIL{queued}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # no-op without a heartbeat


def _register(study: optuna.Study, active: bool) -> None:
    me = _this_worker()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    study.set_user_attr(f"{WORKER_PREFIX}{me['host']}:{me['pid']}", {**me, "active": active, "updated": now})


class _Heartbeat:
    """Records the heartbeats of this worker's running trials, in one background thread.

    Optuna records heartbeats only inside `Study.optimize`; this search asks and tells,
    so it calls the storage's own `record_heartbeat` itself: when a trial is asked, then
    every interval until it is told. A failed write is retried at the next beat.
    """

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self._storage = storage
        self.interval: int | None = getattr(storage, "get_heartbeat_interval", lambda: None)()
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


def _frozen(study: optuna.Study, trial: optuna.trial.Trial) -> FrozenTrial:
    """The stored state of `trial` now."""
    return study.get_trials(deepcopy=False)[trial.number]


def _interrupted(study: optuna.Study, trials: list[optuna.trial.Trial]) -> None:
    """Fail those of `trials` still running ("interrupted") and queue their configurations to run first."""
    for trial in trials:
        if _frozen(study, trial).state == TrialState.RUNNING:
            _requeue(study, _fail(study, trial, "interrupted"))


def _over_budget(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial `number` finds no room: evaluated trials + running or queued ones numbered up to it.

    Every worker orders the trials in flight by number, so concurrent askers agree on
    which of them fit.
    """
    trials = study.get_trials(deepcopy=False)
    ahead = sum(t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number <= number for t in trials)
    return sum(map(_is_evaluated, trials)) + ahead > budget


def _failed_as_stale_elsewhere(study: optuna.Study, trial: optuna.trial.Trial) -> bool:
    """Whether another worker failed this worker's running trial as stale (late heartbeats)."""
    frozen = _frozen(study, trial)
    return frozen.state == TrialState.FAIL and FAIL_REASON_ATTR not in frozen.user_attrs


def _evaluated_configs(study: optuna.Study, space: SearchSpace) -> dict[str, int]:
    """Config key -> number of the first COMPLETE trial with that configuration (not a duplicate or replicate)."""
    done: dict[str, int] = {}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if DUPLICATE_OF_ATTR not in frozen.user_attrs and replicate_index(frozen) == 0:
            config = frozen.user_attrs.get(CONFIG_ATTR) or space.from_params(frozen.params)
            done.setdefault(_config_key(config), frozen.number)
    return done


def _ask(
    study: optuna.Study, space: SearchSpace, heart: _Heartbeat, budget: int
) -> tuple[optuna.trial.Trial, PeftConfig, float] | None:
    """Ask a trial and its configuration (and proposal seconds); None when the budget has no room."""
    with warnings.catch_warnings(), interrupts_deferred():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # _Heartbeat records it
        trial = study.ask()
    try:
        check_interrupt()  # one that landed in ask(), now that the trial can be failed
        trial.set_user_attr(WORKER_ATTR, _this_worker())
        heart.add(optuna_access.trial_id(trial))
        if _over_budget(study, trial.number, budget):
            # Another worker asked at the same moment: give this trial back (and what it popped from the queue).
            _requeue(study, _fail(study, trial, "not run: the rest of the budget went to trials of other workers"))
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
    size = n_valid_configs(space)
    if budget > size:
        _notify(f"the search space holds only {size} valid configurations; budget lowered from {budget} to {size}")
        budget = size

    _recover_stale(study)  # also when the budget is met already
    if study.user_attrs.get(BUDGET_ATTR) != budget:
        study.set_user_attr(BUDGET_ATTR, budget)  # the BO samplers cap their replicates by it
    attrs = {"seed": study.user_attrs.get("seed"), "sampler": study.user_attrs.get("sampler")}  # stored on each trial
    ref = ref or reference_point(study)

    from tqdm import tqdm

    n_done = _n_done(study)
    bar = tqdm(total=budget, initial=min(n_done, budget), disable=not progress, unit="trial", dynamic_ncols=True)
    skips = failures = 0
    waiting = False
    heart = _Heartbeat(optuna_access.storage(study))

    def finish(frozen: FrozenTrial) -> None:
        if on_trial_end is not None:
            on_trial_end(study, frozen)

    # A Ctrl-C is held everywhere but inside `evaluate`, so that none cuts a storage write in
    # half; the loop's check_interrupt calls act on it.
    with interrupts_recorded(), interrupts_deferred():
        _register(study, active=True)
        try:
            while (n_done := _n_done(study)) < budget:  # re-read: other workers may add trials
                bar.update(min(n_done, budget) - bar.n)
                _recover_stale(study, quiet=True)
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
                            _notify(f"{n_done} trials done; the rest of the budget of {budget} is running in other "
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
                    _notify(
                        f"stopping: the last {skips} proposals were duplicates of evaluated configurations or invalid; "
                        f"the sampler has little left to propose ({n_done} of {size} configurations evaluated)"
                    )
                    break
        except KeyboardInterrupt:
            _notify(f"interrupted after {n_done} completed trials; completed trials are kept: {RESUME_HINT}")
            raise
        finally:
            heart.close()
            bar.close()
            _register(study, active=False)
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
        key = _config_key(config)
        replicate = _replicate_proposal(_frozen(study, trial))
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
            finish(_fail(study, trial, "invalid configuration proposed: " + _invalid_reason(space, config)))
            return "skipped", None
        if (other := _held_elsewhere(study, _frozen(study, trial))) is not None:
            # Another worker proposed it at the same moment (each saw the other's proposal too
            # late to count it as pending); of two such trials, at least one sees the other here.
            finish(_fail(study, trial, f"not run: trial {other} has the same configuration"))
            return "skipped", None
        frozen = _evaluate(study, trial, config, evaluate)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        if not _failed_as_stale_elsewhere(study, trial):
            raise
        _notify(f"trial {trial.number} was failed as stale by another worker (late heartbeats) and queued again; "
             "its result here is dropped")
        return "lost", None
    if frozen.state != TrialState.COMPLETE:
        _notify(f"trial {frozen.number} failed: {frozen.user_attrs[FAIL_REASON_ATTR]}")
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


def _evaluate(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    config: PeftConfig,
    evaluate: Callable[[PeftConfig, optuna.trial.Trial], TrialResult],
) -> FrozenTrial:
    """Run `evaluate` and tell the outcome (COMPLETE, or FAIL with a reason)."""
    oom = False
    try:
        with interrupts_immediate():
            result = evaluate(config, trial)
        score, percent = float(result.score), float(result.percent)
        if not (math.isfinite(score) and math.isfinite(percent)):
            raise ValueError(f"evaluation returned a non-finite objective (score={score}, percent={percent})")
    except Exception as exc:  # noqa: BLE001 - any failure of one trial must not stop the search
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
        return _fail(study, trial, failed[0], fail_traceback=failed[1])
    for name, value in (
        ("score", score),
        ("percent", percent),
        ("metrics", _jsonable(result.metrics)),
        ("trainable_params", int(result.trainable_params)),
        ("wall_time_s", float(result.wall_time_s)),
        ("extra", _jsonable(result.extra)),
    ):
        trial.set_user_attr(name, value)
    return study.tell(trial, [score, percent])
