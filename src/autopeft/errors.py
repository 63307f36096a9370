"""Errors that reach the user as a one-line message and a non-zero exit, and Ctrl-C that is never lost."""

from __future__ import annotations

import errno
import os
import signal
import threading
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""


class SettingError(UserError):
    """A bad setting. `parameter`: its name in the library ("budget", "sampler.n_init"); `problem`: what it must be,
    and the value given. The message names the parameter; the CLI names its flag instead (`cli.FLAGS`)."""

    def __init__(self, parameter: str, problem: str, *, context: str = "") -> None:
        super().__init__(f"{context} {parameter} {problem}".lstrip())
        self.parameter = parameter
        self.problem = problem


class DiskFullError(UserError):
    """A write failed for want of disk space (or quota); running the command again resumes."""


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# A full disk in errors that keep no errno: SQLite's SQLITE_FULL, and SQLITE_IOERR (how it reports a journal it
# could not write); Rust's io::Error (safetensors) quotes the strerror.
_FULL_TEXTS = ("database or disk is full", "disk I/O error", *(os.strerror(e) for e in _FULL_ERRNOS))
_STORAGE_MODULES = ("optuna", "sqlalchemy", "sqlite3")  # errors of the study storage and its drivers
RESUME = "run the same command again to resume (what was written before is kept)"


def disk_full_reason(exc: BaseException) -> str | None:
    """Why `exc`, or an error it was raised from, is a full disk or quota (e.g. "No space left on device"); None
    when it is not."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        if found := next((t for t in _FULL_TEXTS if t in str(exc)), None):
            return found
        exc = exc.__cause__
    return None


def _from_storage(exc: BaseException | None) -> bool:
    while exc is not None:
        if type(exc).__module__.split(".")[0] in _STORAGE_MODULES:
            return True
        exc = exc.__cause__
    return False


def disk_full_error(exc: BaseException, what: str, storage: str | None = None,
                    rerun: str = RESUME) -> DiskFullError | None:
    """`exc` as a DiskFullError that names what could not be written, or None when it is not a full disk.

    `what`: the files being written (e.g. "the report in DIR"); `storage`: the study storage, named instead
    when the error comes from it (Optuna, SQLAlchemy, a driver); `rerun`: what to do once there is room.
    A DiskFullError is returned as it is.
    """
    if isinstance(exc, DiskFullError):
        return exc
    if (reason := disk_full_reason(exc)) is None:
        return None
    target = f"the study storage {storage}" if storage and _from_storage(exc) else what
    return DiskFullError(f"could not write {target}: out of disk space ({reason}); free some space on that disk, "
                         f"then {rerun}")


@contextmanager
def disk_full_reported(what: str, storage: str | None = None, rerun: str = RESUME) -> Iterator[None]:
    """Raise a full disk inside the block as a `DiskFullError` (see `disk_full_error`); other errors pass."""
    try:
        yield
    except Exception as exc:
        error = disk_full_error(exc, what, storage, rerun)
        if error is None or error is exc:
            raise
        raise error from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Write `path` whole or not at all (a temporary file, then a rename): a full disk leaves the old file."""
    path = Path(path)
    temp = path.with_name(f".{os.getpid()}-{path.name}")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


_interrupt_requested = threading.Event()
_deferred = 0  # depth of `interrupts_deferred` blocks (the handler runs in the main thread)


def _on_sigint(signum: int, frame: object) -> None:
    _interrupt_requested.set()
    if not _deferred:
        raise KeyboardInterrupt


@contextmanager
def interrupts_recorded() -> Iterator[None]:
    """Record Ctrl-C (SIGINT) as well as raising KeyboardInterrupt, so `check_interrupt` can raise it again.

    Python drops an exception raised inside a weakref callback or `__del__` (it prints
    "Exception ignored in ..."), so a Ctrl-C landing there would be lost and a long search
    would run on. Only the main thread can set handlers; a SIGINT the parent set to be
    ignored stays ignored. Nested blocks leave the outer one in charge.
    """
    previous = signal.getsignal(signal.SIGINT)
    install = threading.current_thread() is threading.main_thread() and previous is signal.default_int_handler
    if install:
        _interrupt_requested.clear()
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
            _interrupt_requested.clear()


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that lands inside the block until the next `check_interrupt`.

    For a step that must not be cut in half, such as a storage write (a KeyboardInterrupt
    inside SQLite's commit leaves its lock held) or `study.ask()`, which stores a RUNNING
    trial before it returns the handle that could fail it again. Only holds a Ctrl-C
    while `interrupts_recorded` has its handler installed.
    """
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


@contextmanager
def interrupts_immediate() -> Iterator[None]:
    """Let a Ctrl-C raise at once inside the block, even within `interrupts_deferred` (e.g. training).

    A Ctrl-C recorded before the block raises on entry; an `interrupts_deferred` block
    nested inside holds one again.
    """
    global _deferred
    saved, _deferred = _deferred, 0
    try:
        check_interrupt()
        yield
    finally:
        _deferred = saved


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C was recorded (called at safe points of long loops)."""
    if _interrupt_requested.is_set():
        raise KeyboardInterrupt
