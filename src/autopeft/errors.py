"""Errors that reach the user as a one-line message and a non-zero exit, and Ctrl-C that is never lost."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from collections.abc import Iterator


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""


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
