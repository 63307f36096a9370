"""BoTorch's fused qLogNEHVI C++ kernel: built where it is safe, never waited on forever.

BoTorch 0.18 compiles ``logei_fused_ext`` (``-march=native``) into ``TORCH_EXTENSIONS_DIR`` the
first time a qLogNEHVI is built, behind torch's ``FileBaton``: a ``lock`` file that a killed
compile leaves behind, after which every later load sleeps forever. So `prepare_fused_kernel`:

- builds in `search.environment.extensions_dir`, a folder keyed by torch, Python and CPU, so
  machines sharing a home folder never load each other's builds;
- serialises autopeft's builds with an ``fcntl.flock`` on a file beside torch's lock. The kernel
  releases a flock when its holder dies, so it is never stale; and while it is held no autopeft
  process is building, so a torch ``lock`` left there is removed (after `FOREIGN_LOCK_WAIT_S`, in
  case a process outside autopeft shares a user-set folder);
- compiles in a child process with a time limit (`COMPILE_TIMEOUT_S`) and loads the built
  kernel in this one. If the compile fails or runs out of time (no compiler, say), BoTorch's
  pure-PyTorch path is used instead, with a one-line warning.

`scripts/setup.sh` calls `main` so that a search never compiles.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from collections.abc import Iterator

from autopeft.log import get_logger
from autopeft.search.environment import extensions_dir

logger = get_logger(__name__)

COMPILE_TIMEOUT_S = 300  # several times a normal compile on 2 cores; past it the pure-PyTorch path is used
FOREIGN_LOCK_WAIT_S = 10.0  # how long a torch lock not made by autopeft may still be released by its owner
EXTENSION = "logei_fused_ext"
_COMPILE = (
    "import sys, botorch.acquisition.multi_objective.logei as m; m._try_load_fused_kernel(); "
    "sys.exit(0 if m._C is not None else 1)"
)
_state: str | None = None  # outcome in this process: "loaded" or "fallback"


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "autopeft-build.flock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clear_stale_torch_lock(folder: Path) -> bool:
    """Remove torch's lock file if it is still there after FOREIGN_LOCK_WAIT_S; whether one was removed."""
    lock = folder / "lock"
    deadline = time.monotonic() + FOREIGN_LOCK_WAIT_S
    while lock.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if lock.exists():
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        return True
    return False


def _fallback(reason: str) -> str:
    import botorch.acquisition.multi_objective.logei as logei

    global _state
    logei._C, logei._load_attempted = None, True  # BoTorch then takes its pure-PyTorch path
    logger.warning(f"BoTorch's fused qLogNEHVI kernel is not available ({reason}); using its pure-PyTorch path "
                   "(slower acquisition, same proposals up to rounding)")
    _state = "fallback"
    return _state


def prepare_fused_kernel(timeout_s: float = COMPILE_TIMEOUT_S) -> str:
    """Make BoTorch's fused kernel loaded in this process, or its fallback chosen; "loaded" or "fallback".

    Idempotent within a process. Never waits on a lock left by a dead process, and waits at most
    `timeout_s` (plus FOREIGN_LOCK_WAIT_S) for a compile.
    """
    global _state
    if _state is not None:
        return _state
    import botorch.acquisition.multi_objective.logei as logei

    if logei._load_attempted:
        _state = "loaded" if logei._C is not None else "fallback"
        return _state
    folder = extensions_dir() / EXTENSION
    with _build_lock(folder):
        _clear_stale_torch_lock(folder)
        if not any(folder.glob(f"{EXTENSION}*.so")):
            try:
                done = subprocess.run([sys.executable, "-c", _COMPILE], env=os.environ.copy(), timeout=timeout_s,
                                      capture_output=True, text=True, check=False)
            except subprocess.TimeoutExpired:
                _clear_stale_torch_lock(folder)
                return _fallback(f"its compile took over {timeout_s:g} s")
            if done.returncode != 0:
                _clear_stale_torch_lock(folder)
                last = (done.stderr.strip().splitlines() or ["no message"])[-1]
                return _fallback(f"its compile failed: {last[:200]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logei._try_load_fused_kernel()
    if logei._C is None:
        return _fallback("the built kernel did not load")
    _state = "loaded"
    return _state


def main() -> None:
    """scripts/setup.sh: build the kernel once, so that searches never compile it."""
    print(f"BoTorch fused kernel in {extensions_dir()}: {prepare_fused_kernel()}")


if __name__ == "__main__":
    main()
