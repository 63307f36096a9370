"""Where the search's numerical code runs: its thread limits and its torch-extensions folder.

- `thread_limit`: a proposal runs with few torch and BLAS threads (option ``num_threads``,
  default 1), restored afterwards. The GP matrices of a search are small, and on a busy
  machine a small BLAS/LAPACK call that hands work to a helper thread waits for that
  thread's time slice (docs/lab-notes/benchmarks-log.md, "Sampler overhead").
- `extensions_dir`: where BoTorch's fused qLogNEHVI kernel is built and loaded
  (``TORCH_EXTENSIONS_DIR``), keyed by torch, Python and CPU (`cpu_tag`):
  ``~/.cache/autopeft/torch_extensions/<tag>``, or ``$AUTOPEFT_TORCH_EXTENSIONS_DIR/<tag>``; a
  ``TORCH_EXTENSIONS_DIR`` set by the user is used as it is. Machines that share a home folder
  then never load each other's ``-march=native`` builds. `search.kernel` builds the kernel there.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

__all__ = ["cpu_tag", "extensions_dir", "thread_limit"]


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """Run with at most `n` torch threads and `n` BLAS threads (OpenBLAS, MKL), then restore them."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            limits = contextlib.nullcontext()
        else:
            limits = threadpool_limits(limits=n, user_api="blas")
        with limits:
            yield
    finally:
        torch.set_num_threads(previous)


def cpu_tag() -> str:
    """A short tag of this CPU (model and instruction-set flags): builds with -march=native differ by it."""
    text = platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
        text += "\n".join(dict.fromkeys(keep))
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def extensions_dir() -> Path:
    """The torch extensions folder autopeft uses (and sets in ``TORCH_EXTENSIONS_DIR``)."""
    if "TORCH_EXTENSIONS_DIR" in os.environ:
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    import torch

    base = os.environ.get("AUTOPEFT_TORCH_EXTENSIONS_DIR")
    if base is None:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(cache, "autopeft", "torch_extensions")
    tag = f"torch-{torch.__version__}-py{sys.version_info.major}{sys.version_info.minor}-cpu-{cpu_tag()}"
    path = Path(base) / tag
    os.environ["TORCH_EXTENSIONS_DIR"] = str(path)
    return path
