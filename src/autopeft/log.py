"""The package's one output channel: the logger "autopeft", as `optuna.logging` is Optuna's.

Status lines (a trial failed, a resume, a warning about the data) go to this logger and nowhere
else; tqdm progress bars are drawn only when a caller passes progress=True. Until a handler is
attached the logger shows nothing, so a search run from the API is silent; the CLI attaches
`enable_default_handler()`. A library user may call it too, or configure `logging`.

    import logging, autopeft.log
    autopeft.log.enable_default_handler()
    autopeft.log.set_verbosity(logging.WARNING)  # only warnings
"""

from __future__ import annotations

import logging
import sys

ROOT = "autopeft"
_root = logging.getLogger(ROOT)
# A NullHandler keeps Python's last-resort handler from printing warnings to stderr on its own.
_root.addHandler(logging.NullHandler())


class _AboveProgressBars(logging.Handler):
    """Info on stdout, warnings on stderr, through tqdm, so a running progress bar is redrawn below."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr if record.levelno >= logging.WARNING else sys.stdout)
        except Exception:  # noqa: BLE001 - logging's contract: a failed emit is reported, never raised
            self.handleError(record)


_default_handler: logging.Handler | None = None


def get_logger(name: str) -> logging.Logger:
    """The logger for module `name` (an "autopeft." name), a child of the package's logger."""
    return logging.getLogger(name)


def set_verbosity(level: int) -> None:
    """Show records at `level` (logging.INFO, WARNING, ...) and above."""
    _root.setLevel(level)


def get_verbosity() -> int:
    return _root.getEffectiveLevel()


def enable_default_handler(level: int = logging.INFO) -> None:
    """Show the package's records (info on stdout, warnings on stderr) above any progress bar; idempotent."""
    global _default_handler
    if _default_handler is None:
        _default_handler = _AboveProgressBars()
        _root.addHandler(_default_handler)
    set_verbosity(level)


def disable_default_handler() -> None:
    global _default_handler
    if _default_handler is not None:
        _root.removeHandler(_default_handler)
        _default_handler = None
