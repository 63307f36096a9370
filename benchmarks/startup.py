"""Start-up of a search: seconds from launching `autopeft search` to the start of its first trial.

Each repeat launches a new process on a new --out folder with warm caches (the first,
unmeasured run fills the OS file cache and BoTorch's kernel folder), and reads the first
trial's `datetime_start` from the study. The trial itself is tiny (32 examples, 1 epoch).

Usage:
    python benchmarks/startup.py --repeats 5 [--task STS-B] [--sampler saasbo]
Beside each run it times the floor: a bare Python importing torch, transformers' modeling code
and Optuna's SQL storage, which any search must do first. (Files written before 2026-12-06 also
counted scikit-learn's and SciPy's metrics in the floor: autopeft imported them then.)
Prints the min and median, and writes benchmarks/results/startup-SAMPLER.json (or --out), with the
machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def one(task: str, sampler: str, out: Path) -> float:
    import optuna

    argv = [sys.executable, "-m", "autopeft.cli", "search", "--task", task, "--budget", "1", "--sampler", sampler,
            "--train-examples", "32", "--dev-examples", "32", "--epochs", "1", "--quiet", "--out", str(out)]
    start = time.time()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    first = min(t.datetime_start for t in study.trials)
    return first.timestamp() - start  # Optuna stores local time; a naive datetime's timestamp() reads it so


FLOOR_IMPORTS = "import torch, transformers.modeling_utils, optuna, alembic.context"


def floor() -> float:
    """Seconds for a bare Python to import the libraries every search needs (exit not counted)."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", f"{FLOOR_IMPORTS}; import time, os; print(time.time()); os._exit(0)"],
                         check=True, capture_output=True, text=True)
    return float(out.stdout.split()[-1]) - start


def machine() -> str:
    """The CPU model, its core count, and whether it computes bf16 natively (which sets the low preset's precision)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 "unknown CPU")
    bf16 = "native bf16 (AMX or AVX-512 BF16)" if ("amx_bf16" in info or "avx512_bf16" in info) else "no native bf16"
    return f"{model}, {os.cpu_count()} cores, {bf16}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", default="STS-B")
    parser.add_argument("--sampler", default="saasbo", help="the default sampler; its first trial is a Sobol point")
    parser.add_argument("--out", type=Path, help="result file (default: benchmarks/results/startup-SAMPLER.json)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one(args.task, args.sampler, Path(tmp) / "warm-up")
        seconds, floors = [], []
        for k in range(args.repeats):  # side by side, so both see the same machine load
            seconds.append(one(args.task, args.sampler, Path(tmp) / f"run{k}"))
            floors.append(floor())
    result = {"task": args.task, "sampler": args.sampler, "machine": machine(), "seconds": seconds,
              "min": float(np.min(seconds)), "median": float(np.median(seconds)),
              "floor_imports": FLOOR_IMPORTS, "floor_seconds": floors,
              "floor_min": float(np.min(floors)), "floor_median": float(np.median(floors))}
    (args.out or HERE / "results" / f"startup-{args.sampler}.json").write_text(json.dumps(result, indent=2))
    print(f"launch -> first trial start, {args.repeats} repeats: min {result['min']:.2f} s, "
          f"median {result['median']:.2f} s")
    print(f"of which the libraries' imports alone ({FLOOR_IMPORTS}): min {result['floor_min']:.2f} s, "
          f"median {result['floor_median']:.2f} s")


if __name__ == "__main__":
    main()
