"""Errors that reach the user as a one-line message and a non-zero exit, and Ctrl-C that is never lost."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from collections.abc import Iterator


class UserError(Exception):
    """Bad input: the message names the problem and how to fix it."""


_interrupt_requested = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _interrupt_requested.set()
    raise KeyboardInterrupt


@contextmanager
def interrupts_recorded() -> Iterator[None]:
    """Record Ctrl-C (SIGINT) as well as raising KeyboardInterrupt, so `check_interrupt` can raise it again.

    Python drops an exception raised inside a weakref callback or `__del__` (it prints
    "Exception ignored in ..."), so a Ctrl-C landing there would be lost and a long search
    would run on. Only the main thread can set handlers; a SIGINT the parent set to be
    ignored stays ignored.
    """
    _interrupt_requested.clear()
    previous = signal.getsignal(signal.SIGINT)
    install = threading.current_thread() is threading.main_thread() and previous is signal.default_int_handler
    if install:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
        _interrupt_requested.clear()


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C was recorded (called at safe points of long loops)."""
    if _interrupt_requested.is_set():
        raise KeyboardInterrupt
