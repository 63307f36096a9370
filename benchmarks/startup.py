"""Start-up of a search: seconds from launching `autopeft search` to the start of its first trial.

Each repeat launches a new process on a new --out folder with warm caches (the first,
unmeasured run fills the OS file cache and BoTorch's kernel folder), and reads the first
trial's `datetime_start` from the study. The trial itself is tiny (32 examples, 1 epoch).

Usage:
    python benchmarks/startup.py --repeats 5 [--task STS-B]
Prints the min and median, and writes benchmarks/results/startup.json.
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


def one(task: str, out: Path) -> float:
    import optuna

    argv = [sys.executable, "-m", "autopeft.cli", "search", "--task", task, "--budget", "1", "--sampler", "random",
            "--train-examples", "32", "--dev-examples", "32", "--epochs", "1", "--quiet", "--out", str(out)]
    start = time.time()
    subprocess.run(argv, check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    first = min(t.datetime_start for t in study.trials)
    return first.timestamp() - start  # Optuna stores local time; a naive datetime's timestamp() reads it so


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--task", default="STS-B")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one(args.task, Path(tmp) / "warm-up")
        seconds = [one(args.task, Path(tmp) / f"run{k}") for k in range(args.repeats)]
    result = {"task": args.task, "seconds": seconds, "min": float(np.min(seconds)), "median": float(np.median(seconds))}
    (HERE / "results" / "startup.json").write_text(json.dumps(result, indent=2))
    print(f"launch -> first trial start, {args.repeats} repeats: min {result['min']:.2f} s, median {result['median']:.2f} s")


if __name__ == "__main__":
    main()
