"""Study storage: where a study lives, and opening (or resuming) one.

A study holds one search: objectives (score to maximise, % trainable
parameters to minimise), its metadata as study user attributes, and one Optuna
trial per evaluated configuration with the results as trial user attributes.

Storage: a SQLite file `<out_dir>/study.db` by default, any SQLAlchemy URL
(`sqlite://`, `postgresql://`, `mysql://`), or an append-only journal file
(`*.log`, `*.journal` or `journal:<path>`).

SQLite storages take the write lock at the start of every transaction, so that
Optuna's read-then-write updates (popping a queued trial, failing a stale one) are
atomic between processes.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from autopeft.errors import SettingError, UserError, disk_full_error
from autopeft.search.workers import DEFAULT_HEARTBEAT_S, HEARTBEAT_GRACE, requeue_heartbeat_stale

DIRECTIONS = ["maximize", "minimize"]  # values = (score, percent)
# Metadata keys that must match when a stored study is resumed.
COMPARED_KEYS = ("model", "model_weights", "task", "task_identity", "space", "fidelity", "objectives", "selection",
                 "standards", "promotion", "n_init", "sampler_options", "record_version")


def as_stored(value: Any) -> Any:
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


def describe_storage(storage: str | None, out_dir: Path) -> str:
    """The storage as messages name it: a SQLite file's path, else the URL (no password) or journal file."""
    if storage is None:
        return str(Path(out_dir) / "study.db")
    if storage.startswith("sqlite:///"):
        return storage[len("sqlite:///"):]
    return _safe_url(storage)


def _journal_path(storage: str) -> str | None:
    """The journal file of a journal storage (journal:PATH, or a path ending in .log/.journal); else None."""
    journal = storage[len("journal:"):] if storage.startswith("journal:") else None
    if journal is None and "://" not in storage and storage.endswith((".log", ".journal")):
        journal = storage
    return journal


def check_heartbeat(heartbeat: int | None, storage: str | None) -> None:
    """SettingError unless `heartbeat` is None or whole seconds >= 0, and a journal storage has none."""
    if heartbeat is not None and (isinstance(heartbeat, bool) or not isinstance(heartbeat, int) or heartbeat < 0):
        raise SettingError("heartbeat", f"must be a whole number of seconds >= 0 (0: off), got {heartbeat!r}")
    journal = _journal_path(storage) if storage else None
    if journal is not None and heartbeat:
        raise SettingError(
            "heartbeat", f"needs a database storage (sqlite:///..., postgresql://..., mysql://...): Optuna's journal "
            f"storage {journal} records no heartbeats. Leave it out (dead workers on this host are still found by "
            "their pid) or use a database")


def make_storage(storage: str | None, out_dir: Path, heartbeat: int | None = 0) -> optuna.storages.BaseStorage:
    """Open the storage named by `storage` (None: `<out_dir>/study.db`).

    `heartbeat`: seconds between heartbeats of running trials (database storages; a
    trial is stale after HEARTBEAT_GRACE intervals without one); 0: none; None:
    DEFAULT_HEARTBEAT_S for a database, none for a journal file.
    """
    check_heartbeat(heartbeat, storage)
    if storage is None:
        storage = f"sqlite:///{(Path(out_dir) / 'study.db').resolve()}"
    journal = _journal_path(storage)
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
        if scheme == "sqlite":
            _check_sqlite_folder(storage)
        return _open_rdb(storage, DEFAULT_HEARTBEAT_S if heartbeat is None else heartbeat)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - drivers raise many kinds
        shown = journal if journal is not None else _safe_url(storage)
        if (full := disk_full_error(exc, f"the study storage {describe_storage(storage, out_dir)}")) is not None:
            raise full from exc
        raise UserError(f"cannot open study storage {shown}: {type(exc).__name__}: {exc}") from None


def _check_sqlite_folder(url: str) -> None:
    """Refuse a SQLite URL whose database file's folder does not exist (SQLite would only say "unable to open")."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)  # SQLite takes it as given: relative to the current folder, no ~
    folder = path.absolute().parent
    if folder.is_dir():
        return
    where = f"the folder {folder}"
    if not path.is_absolute():
        where += " (sqlite:/// and a relative path; sqlite://// starts an absolute one)"
    if folder.exists():
        raise UserError(f"cannot open study storage {url}: {where} is not a folder; "
                        "give a database file in an existing folder")
    raise UserError(f"cannot open study storage {url}: {where} does not exist; create it (mkdir -p) "
                    "or give a database file in an existing folder")


def _open_rdb(url: str, heartbeat: int) -> optuna.storages.RDBStorage:
    """An RDBStorage, with Optuna's heartbeat when `heartbeat` > 0 (stale trials re-queued)."""
    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if sqlite else {}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=HEARTBEAT_GRACE * heartbeat,
                      heartbeat_stale_trial_callback=requeue_heartbeat_stale)
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
        raise SettingError("out_dir", f"{out_dir} cannot be created ({exc.strerror}); pass a writable folder") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SettingError("out_dir", f"{out_dir} is not writable; pass a writable folder")
    store = make_storage(storage, out_dir, heartbeat)
    new = as_stored(metadata)
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
            # record_version first: a worker loading the study mid-write must not take it for an older one
            for key in sorted(new, key=lambda k: k != "record_version"):
                study.set_user_attr(key, new[key])
            return study

    study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler)
    old = study.user_attrs
    if [d.name.lower() for d in study.directions] != ["maximize", "minimize"]:
        raise UserError(
            f"study '{study_name}' has directions {[d.name.lower() for d in study.directions]}, not "
            f"{DIRECTIONS}; it was not made by autopeft. Use a new --study name or --out dir"
        )
    if "fidelity" in old and "record_version" not in old:
        raise UserError(
            f"study '{study_name}' was made by an earlier autopeft, which chose configurations on the split it "
            "reported (no selection split): its trials cannot be mixed with this version's. `autopeft report` still "
            "reads it; to search again, use a new --out dir (or --study name)")
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
        if key not in old or old[key] != value:
            study.set_user_attr(key, value)
    return study


def _difference(key: str, stored: Any, new: Any) -> str:
    """'key: stored X vs new Y', naming only the differing fields of a dict."""
    if isinstance(stored, dict) and isinstance(new, dict):
        fields = [f for f in dict.fromkeys([*stored, *new]) if stored.get(f) != new.get(f)]
        return "; ".join(f"{key}.{f}: stored {json.dumps(stored.get(f))} vs new {json.dumps(new.get(f))}"
                         for f in fields)
    return f"{key}: stored {json.dumps(stored)} vs new {json.dumps(new)}"
