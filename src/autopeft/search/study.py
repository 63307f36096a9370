"""Study storage and the search loop.

A study holds one search: objectives (score to maximise, % trainable
parameters to minimise), its metadata as study user attributes, and one Optuna
trial per evaluated configuration with the results as trial user attributes.

Storage: a SQLite file `<out_dir>/study.db` by default, any SQLAlchemy URL
(`sqlite://`, `postgresql://`, `mysql://`), or an append-only journal file
(`*.log`, `*.journal` or `journal:<path>`).

Several workers may share one study: each trial records its worker (host, pid)
and each running search registers itself as a study attribute `worker:<host>:<pid>`.
When a search starts, a RUNNING trial is taken as left over by a killed run
when its worker is dead (same host: the pid is gone) — or, for a trial killed
before it recorded a worker, when no other worker is alive. Trials of workers
on other hosts are left alone.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autopeft.errors import UserError
from autopeft.search.pareto import hypervolume, pareto_mask
from autopeft.space import SIZE_KEYS, PeftConfig, SearchSpace

DIRECTIONS = ["maximize", "minimize"]  # values = (score, percent)
# Metadata keys that must match when a stored study is resumed.
COMPARED_KEYS = ("model", "task", "space", "fidelity", "objectives")
MAX_CONSECUTIVE_SKIPS = 50  # proposals not evaluated (duplicates, invalid) in a row
MAX_CONSECUTIVE_FAILURES = 10  # evaluations raising in a row
RESUME_HINT = "run the same search command again (same --study name and --out dir / storage) to resume"


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


def make_storage(storage: str | None, out_dir: Path) -> optuna.storages.BaseStorage:
    """Open the storage named by `storage` (None: `<out_dir>/study.db`)."""
    if storage is None:
        storage = f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"
    journal = storage[len("journal:"):] if storage.startswith("journal:") else None
    if journal is None and "://" not in storage and storage.endswith((".log", ".journal")):
        journal = storage
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
        return optuna.storages.RDBStorage(storage)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - drivers raise many kinds
        shown = journal if journal is not None else _safe_url(storage)
        raise UserError(f"cannot open study storage {shown}: {type(exc).__name__}: {exc}") from None


def open_study(
    storage: str | None,
    study_name: str,
    out_dir: Path,
    metadata: dict[str, Any],
    sampler: optuna.samplers.BaseSampler | None,
) -> optuna.Study:
    """Create the study, or load it when it exists and its metadata match.

    `metadata` (model, task, space, fidelity, objectives, sampler, seed, and
    optionally `reference_point` = [score, percent]) is stored as study user
    attributes on creation. On load, a difference in any of COMPARED_KEYS raises
    UserError and nothing is written; other keys (sampler, seed, ...) are updated
    to describe the current run.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out_dir}: {exc.strerror}; pass a writable --out dir") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserError(f"output directory {out_dir} is not writable; pass a writable --out dir")
    store = make_storage(storage, out_dir)
    new = _jsonable(metadata)
    try:
        store.get_study_id_from_name(study_name)
        exists = True
    except KeyError:
        exists = False

    if not exists:
        study = optuna.create_study(storage=store, study_name=study_name, sampler=sampler, directions=DIRECTIONS)
        for key, value in new.items():
            study.set_user_attr(key, value)
        return study

    study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler)
    old = study.user_attrs
    blank = not study.trials and not any(k in old for k in COMPARED_KEYS)  # created, crashed before attrs
    if [d.name.lower() for d in study.directions] != ["maximize", "minimize"]:
        raise UserError(
            f"study '{study_name}' has directions {[d.name.lower() for d in study.directions]}, not "
            f"{DIRECTIONS}; it was not made by autopeft. Use a new --study name or --out dir"
        )
    differ = [k for k in COMPARED_KEYS if (k in new or k in old) and old.get(k) != new.get(k)]
    if differ and not blank:
        lines = "; ".join(f"{k}: stored {json.dumps(old.get(k))} vs new {json.dumps(new.get(k))}" for k in differ)
        raise UserError(
            f"study '{study_name}' already exists with a different {', '.join(differ)} ({lines}). "
            "Use a new --study name or a new --out dir to start another search, or rerun with the "
            "original settings to resume it"
        )
    for key, value in new.items():
        if old.get(key) != value:
            study.set_user_attr(key, value)
    return study


# --- rows -----------------------------------------------------------------------------


def _config_key(config: PeftConfig | dict[str, Any]) -> str:
    data = config.to_dict() if isinstance(config, PeftConfig) else PeftConfig.from_dict(config).to_dict()
    return json.dumps(data, sort_keys=True)


def _row(trial: FrozenTrial, retrained: dict[str, Any]) -> dict[str, Any]:
    attrs = trial.user_attrs
    row = {
        "number": trial.number,
        "config": attrs.get("config"),
        "score": float(trial.values[0]),
        "percent": float(trial.values[1]),
        "trainable_params": attrs.get("trainable_params"),
        "metrics": attrs.get("metrics", {}),
        "wall_time_s": attrs.get("wall_time_s"),
        "proposal_seconds": attrs.get("proposal_seconds"),
        "seed": attrs.get("seed"),
        "extra": attrs.get("extra", {}),
    }
    if "duplicate_of" in attrs:
        row["duplicate_of"] = attrs["duplicate_of"]
    info = retrained.get(str(trial.number))
    if info:
        row["retrained_mean"] = info.get("mean")
        row["retrained_std"] = info.get("std")
        row["retrained_scores"] = info.get("scores")
    return row


def completed_trials(study: optuna.Study, include_duplicates: bool = False) -> list[dict[str, Any]]:
    """One row per COMPLETE trial in trial order (duplicates left out unless asked).

    Keys: number, config (dict), score, percent, trainable_params, metrics,
    wall_time_s, proposal_seconds, seed, extra; `duplicate_of` for duplicates;
    retrained_mean / retrained_std / retrained_scores when recorded.
    """
    retrained = study.user_attrs.get("retrained", {})
    rows = [
        _row(t, retrained)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if include_duplicates or "duplicate_of" not in t.user_attrs
    ]
    return sorted(rows, key=lambda r: r["number"])


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """Pareto-optimal rows, sorted by percent ascending (then score descending)."""
    rows = completed_trials(study)
    if not rows:
        return []
    mask = pareto_mask([r["score"] for r in rows], [r["percent"] for r in rows])
    return sorted((r for r, m in zip(rows, mask) if m), key=lambda r: (r["percent"], -r["score"], r["number"]))


def record_retrained(study: optuna.Study, number: int, scores: list[float]) -> None:
    """Store full-fidelity retraining scores of trial `number` (study attr `retrained`)."""
    scores = [float(s) for s in scores]
    retrained = dict(study.user_attrs.get("retrained", {}))
    retrained[str(number)] = {
        "scores": scores,
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
    }
    study.set_user_attr("retrained", retrained)


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


def front_summary(study: optuna.Study, ref: tuple[float, float] | None = None) -> tuple[int, float]:
    """(Pareto front size, hypervolume) of the completed trials."""
    rows = completed_trials(study)
    ref = ref or reference_point(study)
    s, p = [r["score"] for r in rows], [r["percent"] for r in rows]
    return int(pareto_mask(s, p).sum()), hypervolume(s, p, *ref)


# --- search ---------------------------------------------------------------------------


def n_valid_configs(space: SearchSpace) -> int:
    """Number of valid configurations in the space (at least one module and one layer on)."""
    combos = math.prod(len(getattr(space, k)) for k in SIZE_KEYS)
    all_off = int(all(0 in getattr(space, k) for k in SIZE_KEYS))
    layer_combos = 2 ** len(space.searched_layers) - int(not any(f is True for f in space.fixed_layers))
    return (combos - all_off) * layer_combos


def _say(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _n_done(study: optuna.Study) -> int:
    """COMPLETE trials that were evaluated (duplicates do not count)."""
    return sum(
        "duplicate_of" not in t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    )


def _fail(study: optuna.Study, trial: optuna.trial.Trial, reason: str, **attrs: Any) -> FrozenTrial:
    trial.set_user_attr("fail_reason", reason)
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    return study.tell(trial, state=TrialState.FAIL)


def _me() -> dict[str, Any]:
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
    me = _me()
    if worker.get("host") != me["host"]:
        return True  # cannot check another host: assume it is alive
    return worker.get("pid") != me["pid"] and _pid_alive(int(worker.get("pid", -1)))


def _recover_stale(study: optuna.Study, done: dict[str, int]) -> None:
    """Fail RUNNING trials left by a killed run and enqueue their configurations."""
    others = any(
        _other_worker_alive(w)
        for k, w in study.user_attrs.items()
        if k.startswith("worker:") and isinstance(w, dict) and w.get("active")
    )
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = frozen.user_attrs.get("worker")
        if _other_worker_alive(owner) or (owner is None and others):
            who = f"worker {owner['host']}:{owner['pid']}" if owner else "another live worker"
            _say(f"trial {frozen.number} is running in {who}; left alone")
            continue
        # No public API sets attrs on an existing trial by number; Trial(study, id) is the handle ask() returns.
        trial = optuna.trial.Trial(study, frozen._trial_id)
        _fail(study, trial, "stale: interrupted run")
        params = dict(frozen.params)
        key = _config_key(frozen.user_attrs["config"]) if "config" in frozen.user_attrs else None
        if params and key not in done:
            study.enqueue_trial(params, user_attrs={"rerun_of": frozen.number})
        _say(f"trial {frozen.number} was left running by an interrupted run: marked FAIL and queued to run first")


def _register(study: optuna.Study, active: bool) -> None:
    me = _me()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    study.set_user_attr(f"worker:{me['host']}:{me['pid']}", {**me, "active": active, "updated": now})


def _evaluated_configs(study: optuna.Study, space: SearchSpace) -> dict[str, int]:
    """Config key -> number of the first COMPLETE, non-duplicate trial with that configuration."""
    done: dict[str, int] = {}
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if "duplicate_of" not in frozen.user_attrs:
            config = frozen.user_attrs.get("config") or space.from_params(frozen.params)
            done.setdefault(_config_key(config), frozen.number)
    return done


def _ask(study: optuna.Study, space: SearchSpace) -> tuple[optuna.trial.Trial, PeftConfig, float]:
    start = time.perf_counter()
    trial = study.ask()
    trial.set_user_attr("worker", _me())
    for name, dist in space.optuna_distributions().items():
        trial.suggest_categorical(name, dist.choices)
    measured = time.perf_counter() - start
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
    `evaluate` is told FAIL with `fail_reason` and the search goes on.
    `on_trial_end(study, frozen_trial)` is called after every tell. `ref` is the
    hypervolume reference point shown in the progress bar (default: the study's).
    Resuming: completed trials are kept, RUNNING ones (from a killed run) are
    failed and re-run first. On Ctrl-C the trial being evaluated (and the rest of
    its batch) is told FAIL ("interrupted") and queued the same way, then the
    KeyboardInterrupt is re-raised.
    """
    for name, value in (("budget", budget), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    size = n_valid_configs(space)
    if budget > size:
        _say(f"the search space holds only {size} valid configurations; budget lowered from {budget} to {size}")
        budget = size

    _recover_stale(study, _evaluated_configs(study, space))
    seed = study.user_attrs.get("seed")
    sampler_name = study.user_attrs.get("sampler")
    ref = ref or reference_point(study)

    from tqdm import tqdm

    n_done = _n_done(study)
    bar = tqdm(total=budget, initial=min(n_done, budget), disable=not progress, unit="trial", dynamic_ncols=True)
    skips = failures = 0

    def finish(frozen: FrozenTrial) -> None:
        if on_trial_end is not None:
            on_trial_end(study, frozen)

    _register(study, active=True)
    try:
        while (n_done := _n_done(study)) < budget:  # re-read: other workers may add trials
            bar.update(min(n_done, budget) - bar.n)
            done = _evaluated_configs(study, space)
            asked = [_ask(study, space) for _ in range(min(batch, budget - n_done))]
            for i, (trial, config, proposal_s) in enumerate(asked):
                try:
                    trial.set_user_attr("config", config.to_dict())
                    trial.set_user_attr("proposal_seconds", proposal_s)
                    trial.set_user_attr("seed", seed)
                    trial.set_user_attr("sampler", sampler_name)
                    key = _config_key(config)
                    if key in done:
                        first = study.get_trials(deepcopy=False)[done[key]]
                        trial.set_user_attr("duplicate_of", done[key])
                        for name in ("score", "percent", "metrics", "trainable_params"):
                            trial.set_user_attr(name, first.user_attrs.get(name))
                        finish(study.tell(trial, first.values))
                        skips += 1
                    elif not space.contains(config):
                        finish(_fail(study, trial, "invalid configuration proposed: " + _invalid_reason(space, config)))
                        skips += 1
                    else:
                        skips = 0
                        frozen = _evaluate(study, trial, config, evaluate)
                        if frozen.state == TrialState.COMPLETE:
                            failures = 0
                            done[key] = frozen.number
                            n_done += 1
                            size_, hv = front_summary(study, ref)
                            bar.set_postfix_str(
                                f"front {size_}, HV {hv:.4g}, last {frozen.values[0]:.2f} @ {frozen.values[1]:.3g}%"
                            )
                            bar.update(1)
                        else:
                            failures += 1
                            _say(f"trial {frozen.number} failed: {frozen.user_attrs['fail_reason']}")
                        finish(frozen)
                except KeyboardInterrupt:
                    for other, _, _ in asked[i:]:
                        frozen = study.get_trials(deepcopy=False)[other.number]
                        if frozen.state == TrialState.RUNNING:
                            _fail(study, other, "interrupted")
                            study.enqueue_trial(dict(frozen.params), user_attrs={"rerun_of": other.number})
                    raise
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    last = study.get_trials(deepcopy=False)[trial.number].user_attrs.get("fail_reason")
                    raise UserError(
                        f"{failures} evaluations in a row failed (last: {last}); fix the cause, then {RESUME_HINT}"
                    )
            if skips >= MAX_CONSECUTIVE_SKIPS:
                _say(
                    f"stopping: the last {skips} proposals were duplicates of evaluated configurations or invalid; "
                    f"the sampler has little left to propose ({n_done} of {size} configurations evaluated)"
                )
                break
    except KeyboardInterrupt:
        _say(f"interrupted after {n_done} completed trials; completed trials are kept: {RESUME_HINT}")
        raise
    finally:
        bar.close()
        _register(study, active=False)
    return study


def _invalid_reason(space: SearchSpace, config: PeftConfig) -> str:
    try:
        space.check(config)
    except UserError as exc:
        return str(exc)
    return "unknown"


def _evaluate(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    config: PeftConfig,
    evaluate: Callable[[PeftConfig, optuna.trial.Trial], TrialResult],
) -> FrozenTrial:
    """Run `evaluate` and tell the outcome (COMPLETE, or FAIL with a reason)."""
    try:
        result = evaluate(config, trial)
        score, percent = float(result.score), float(result.percent)
        if not (math.isfinite(score) and math.isfinite(percent)):
            raise ValueError(f"evaluation returned a non-finite objective (score={score}, percent={percent})")
    except Exception as exc:  # noqa: BLE001 - any failure of one trial must not stop the search
        return _fail(
            study, trial, f"{type(exc).__name__}: {exc}", fail_traceback=traceback.format_exc()[-4000:]
        )
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
