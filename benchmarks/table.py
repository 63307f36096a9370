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

Seed noise can decide a single evaluation's score at low fidelity. To average it out, train
every configuration of a table again with other training seeds (the seed also draws the
training subset) and append those evaluations to the same CSV:

    python benchmarks/table.py reseed benchmarks/data/sst2_minilm_low.csv --seed 1 --out /tmp/seed1.csv

(resumable: rows already in --out are skipped; run one process per seed, then append each
--out file's rows to the table). A table may thus hold several evaluations of a
configuration; `load_table` gives one row per configuration with their mean score.

To grow a table with new uniformly random configurations (not yet in it), train them with
each training seed the table holds, one process per seed, the same draw seed in each:

    python benchmarks/table.py extend benchmarks/data/sst2_minilm_low.csv --new 200 --draw-seed 1 \
        --seed 0 --out /tmp/new_seed0.csv
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from autopeft.search.results import completed_trials
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
            writer.writerow(_format_row(r["number"], PeftConfig.from_dict(r["config"]), r["score"], r["percent"],
                                        r["trainable_params"], r["seed"] if r["train_seed"] is None else r["train_seed"],
                                        r["wall_time_s"],
                                        study.user_attrs.get("sampler", "random"), study.user_attrs["task"]))
    return len(rows)


def seed_trainer(task_name: str):
    """A function train(config, seed) -> TrainResult: one evaluation at the tables' fidelity.

    The `low` preset with training seed `seed`, through the `train_and_evaluate` a search
    trial calls. The task, the tokenizer and a lower-layer states cache are loaded once and
    shared across calls. The stored tables were trained with SDPA attention (before
    autopeft's matmul attention, which differs in rounding), so new seeds use it too and
    retraining a stored row reproduces its score.
    """
    from autopeft.frozen import StatesCache
    from autopeft.models import load_tokenizer
    from autopeft.tasks import load_task
    from autopeft.training import fidelity_from, train_and_evaluate

    task, tokenizer, cache, low = load_task(task_name), load_tokenizer("minilm"), StatesCache(), fidelity_from("low")

    def train(config: PeftConfig, seed: int):
        return train_and_evaluate("minilm", task, config, replace(low, seed=seed), progress=False,
                                  tokenizer=tokenizer, cache=cache, attention="sdpa")

    return train


def reseed(table_path: Path, seed: int, out_path: Path, threads: int | None = None) -> int:
    """Train every configuration of the table with training seed `seed`; append rows to out_path.

    Configurations already in out_path are skipped. Returns the number of new rows.
    """
    rows = load_table(table_path)
    if any(seed in r["seed_scores"] for r in rows):
        raise SystemExit(f"{table_path} already holds evaluations with seed {seed}; choose another seed")
    return _train_rows(rows, table_task(rows), seed, out_path, threads)


def new_configurations(rows: list[dict], n: int, draw_seed: int) -> list[dict]:
    """`n` uniformly random valid configurations of the default MiniLM space not yet in `rows`.

    Deterministic in `draw_seed`, so one process per training seed trains the same
    configurations. `rows` and the result as `load_table` gives them (the result without
    scores), trials numbered on from the table's last.
    """
    from autopeft.workflow import describe_model, make_space

    space = make_space(describe_model("minilm", 2)[0])
    seen = {_config_key(r["config"]) for r in rows}
    rng, drawn = np.random.default_rng(draw_seed), []
    next_trial = max(int(r["trial"]) for r in rows) + 1
    while len(drawn) < n:
        config = space.sample(rng)
        key = _config_key(config)
        if key not in seen:
            seen.add(key)
            drawn.append({"trial": next_trial + len(drawn), "config": config, "seed_scores": {}, "sampler": "random"})
    return drawn


def extend(table_path: Path, n: int, draw_seed: int, seed: int, out_path: Path, threads: int | None = None) -> int:
    """Train `n` new random configurations (`new_configurations`) with training seed `seed`.

    Appends to out_path, resumable like `reseed`. Returns the number of new rows.
    """
    rows = load_table(table_path)
    return _train_rows(new_configurations(rows, n, draw_seed), table_task(rows), seed, out_path, threads)


def _train_rows(rows: list[dict], task_name: str, seed: int, out_path: Path, threads: int | None) -> int:
    """Train each row's configuration with training seed `seed`, appending to out_path (skipping rows in it)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    done = {r["config"] for r in _read(out_path)} if out_path.is_file() else set()
    train = seed_trainer(task_name)
    new = 0
    with out_path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if not done:
            writer.writeheader()
        for r in rows:
            if _config_key(r["config"]) in done:
                continue
            result = train(r["config"], seed)
            writer.writerow(_format_row(r["trial"], r["config"], result.score, result.percent,
                                        result.trainable_params, seed, result.wall_time_s, r["sampler"], task_name))
            f.flush()
            new += 1
            before = f"(seed(s) {sorted(r['seed_scores'])}: {r['score']:.2f}) " if r["seed_scores"] else ""
            print(f"{r['trial']:>4} {r['config'].describe():<44} seed {seed}: {result.score:.2f} "
                  f"{before}{result.wall_time_s:.1f}s", flush=True)
    return new


def _read(csv_path: Path) -> list[dict]:
    with csv_path.open(newline="") as f:
        return list(csv.DictReader(f))


def _config_key(config: PeftConfig) -> str:
    """The config column: compact JSON of the configuration."""
    return json.dumps(config.to_dict(), separators=(",", ":"))


def _format_row(trial: int | str, config: PeftConfig, score: float, percent: float, trainable_params: int,
                seed: int, time_s: float, sampler: str, task: str) -> dict:
    return {"trial": trial, "config": _config_key(config),
            "describe": config.describe(), "score": f"{score:.4f}", "percent": f"{percent:.6f}",
            "trainable_params": trainable_params, "seed": seed, "time_s": f"{time_s:.1f}", "sampler": sampler,
            "task": task}


def load_table(csv_path: Path) -> list[dict]:
    """One row per configuration, in order of first appearance, `config` as a PeftConfig.

    `score` is the mean over the configuration's evaluations with distinct seeds (one
    evaluation: its score); `seed_scores` maps each seed to its score; `time_s` is the
    first evaluation's. Numbers are floats.
    """
    by_config: dict[str, dict] = {}
    for r in _read(csv_path):
        row = by_config.setdefault(r["config"], {**r, "seed_scores": {}})
        row["seed_scores"].setdefault(int(r["seed"]), float(r["score"]))
    rows = list(by_config.values())
    for r in rows:
        r["config"] = PeftConfig.from_dict(json.loads(r["config"]))
        r["score"] = float(np.mean(list(r["seed_scores"].values())))
        for key in ("percent", "time_s"):
            r[key] = float(r[key])
    return rows


def table_task(rows: list[dict]) -> str:
    """The one GLUE task the table's rows were evaluated on."""
    tasks = {r["task"] for r in rows}
    if len(tasks) != 1:
        raise ValueError(f"a table must hold one task's evaluations, found {sorted(tasks)}")
    return tasks.pop()


def _at_least_one(text: str) -> int:
    """argparse type for --new: a whole number of configurations, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="write the CSV of a collected study folder")
    p.add_argument("study_dir", type=Path)
    p.add_argument("csv", type=Path)
    training = argparse.ArgumentParser(add_help=False)  # what reseed and extend share
    training.add_argument("table", type=Path)
    training.add_argument("--seed", type=int, required=True, help="training seed")
    training.add_argument("--out", type=Path, required=True, help="CSV the new evaluations are appended to")
    training.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    sub.add_parser("reseed", parents=[training],
                   help="train every configuration of a table again with another training seed")
    p = sub.add_parser("extend", parents=[training],
                       help="train new random configurations, not yet in the table, with one seed")
    p.add_argument("--new", type=_at_least_one, required=True, help="how many new configurations")
    p.add_argument("--draw-seed", type=int, required=True, help="seed of the draw (the same in every process)")
    args = parser.parse_args()
    if args.command == "export":
        n = export(args.study_dir, args.csv)
        print(f"wrote {n} rows to {args.csv}")
    elif args.command == "reseed":
        n = reseed(args.table, args.seed, args.out, args.threads)
        print(f"appended {n} rows to {args.out}")
    else:
        n = extend(args.table, args.new, args.draw_seed, args.seed, args.out, args.threads)
        print(f"appended {n} rows to {args.out}")


if __name__ == "__main__":
    main()
