"""Issue-4 tabular benchmark: real low-fidelity evaluations of configurations on one task.

Collect (random configurations of the default MiniLM space, evaluated by `autopeft`
itself: N worker processes on one SQLite study, one torch thread each):

    OMP_NUM_THREADS=1 autopeft search --model minilm --task RTE --sampler random --budget 300 \
        --out runs/table --quiet &      # and, in a second shell, the same with `worker`

Then write the CSV kept in the repository (one row per evaluated configuration):

    python benchmarks/table.py export runs/table benchmarks/data/rte_minilm_low.csv

Columns: trial, config (JSON of the PeftConfig), describe, score (dev metric, %),
percent (% trainable parameters of the backbone), trainable_params, seed (training seed),
time_s (wall time of the trial), sampler, task (GLUE task name). `load_table` reads it back.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from autopeft.search.study import completed_trials
from autopeft.workflow import open_existing
from autopeft.space import PeftConfig

COLUMNS = ("trial", "config", "describe", "score", "percent", "trainable_params", "seed", "time_s", "sampler", "task")


def export(study_dir: Path, csv_path: Path) -> int:
    study = open_existing(study_dir, None, "autopeft")
    rows = completed_trials(study)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            config = PeftConfig.from_dict(r["config"])
            writer.writerow({
                "trial": r["number"], "config": json.dumps(config.to_dict(), separators=(",", ":")),
                "describe": config.describe(), "score": f"{r['score']:.4f}", "percent": f"{r['percent']:.6f}",
                "trainable_params": r["trainable_params"], "seed": r["seed"], "time_s": f"{r['wall_time_s']:.1f}",
                "sampler": study.user_attrs.get("sampler", "random"), "task": study.user_attrs["task"],
            })
    return len(rows)


def load_table(csv_path: Path) -> list[dict]:
    """Rows of the CSV with `config` as a PeftConfig and numbers as floats."""
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["config"] = PeftConfig.from_dict(json.loads(r["config"]))
        for key in ("score", "percent", "time_s"):
            r[key] = float(r[key])
    return rows


def table_task(rows: list[dict]) -> str:
    """The one GLUE task the table's rows were evaluated on."""
    tasks = {r["task"] for r in rows}
    if len(tasks) != 1:
        raise ValueError(f"a table must hold one task's evaluations, found {sorted(tasks)}")
    return tasks.pop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write the CSV of a collected study folder")
    p.add_argument("study_dir", type=Path)
    p.add_argument("csv", type=Path)
    args = parser.parse_args()
    n = export(args.study_dir, args.csv)
    print(f"wrote {n} rows to {args.csv}")


if __name__ == "__main__":
    main()
