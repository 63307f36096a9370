"""The results table: found configurations against SA, PA, PT, LoRA and full fine-tuning, over seeds, on GLUE.

Every run trains one configuration on one task at one fidelity with one seed and appends one JSON
line to OUT (default benchmarks/results/glue_table.jsonl): task, method, config (its JSON, or
"full"), percent, seed, fidelity, metrics, score, wall_s, source. A rerun skips the runs already
there, so the table is built across sessions; `--workers N` runs N processes with one torch
thread each.

Methods (per task, all layers for the single modules, sizes as in `workflow.baseline_configs`):
- full_ft; SA, PA, PT at hidden/16; LoRA r=8;
- found: two configurations spread along the front of a search on that task (`--study
  TASK=DIR`, the search's --out folder), each at <= the largest single module's %;
- transferred: `--transfer-from TASK`'s found configuration with the higher mean over its
  seeds here (runs on TASK must be done), trained on the other tasks; with a promoted study, its
  best answer member by the selection split (no dev score chooses it);
- answer (the second table, issue 36): up to two members of a promoted search's answer (`--study
  TASK=DIR` of `autopeft search --promote K --target full`), each at <= the largest single
  module's %, the best by the selection split first. Nothing of dev chooses them; each row says
  what did (`selected_on`).

Fidelity: the `full` preset (whole train split, 3 epochs, max length 128), the same for every
method of a task. SST-2 trains on a fixed 10,000-example subset of its train split (subset seed
0, whatever the training seed; `--sst2-train`) and scores on the full dev split.

Usage:
    python benchmarks/glue_table.py --methods SA --seeds 10 --tasks MRPC,STS-B,CoLA,SST-2   # one run per task
    python benchmarks/glue_table.py --workers 2 --seeds 10,11,12 \\
        --study MRPC=benchmarks/results/glue_searches/MRPC ... --transfer-from MRPC
    python benchmarks/glue_table.py --summary        # the table and goals, from OUT (glue_report.py)
    python benchmarks/glue_table.py --compute --study MRPC=DIR ...   # each search's compute (issue 36)
The second table: benchmarks/glue_table_v2.sh.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "glue_table.jsonl"
TASKS = ("MRPC", "STS-B", "CoLA", "SST-2")
SINGLES = ("SA", "PA", "PT", "LoRA")  # the standard modules
METHODS = ("full_ft", *SINGLES, "found", "transferred", "answer")
# The reference protocol (Zhou et al.'s code): 200 trials of up to 20 epochs on the whole train split,
# then 5 seeds of each non-dominated point; its search alone is counted, so the fraction is an upper bound.
REFERENCE_TRIALS, REFERENCE_EPOCHS = 200, 20
MODEL = "minilm"
FOUND_PER_TASK = 2


def load(task_name: str, sst2_train: int):
    """The task's data, SST-2's train split cut to a fixed subset."""
    from autopeft.tasks import load_task

    task = load_task(task_name)
    if task.spec.name == "SST-2" and sst2_train < len(task.train):
        task = replace(task, train=task.train.subset(sst2_train, 0))
    return task


def single_modules(spec) -> dict[str, Any]:
    """method -> configuration of the standard baselines (full_ft: "full")."""
    from autopeft.workflow import baseline_configs

    named = baseline_configs(spec, full_finetuning=True)
    by_method = {"full_ft": named.pop("full fine-tuning")}
    for name, config in named.items():
        by_method[name.rstrip("0123456789")] = config
    return by_method


def found_configs(study_dir: str, spec, max_percent: float) -> list[tuple[Any, str]]:
    """Two configurations spread along the study's front of means, each at <= max_percent; with their source."""
    from autopeft.search.results import front_rows
    from autopeft.space import PeftConfig
    from autopeft.workflow import open_existing, spread_along_front

    study = open_existing(study_dir, None, "autopeft")
    rows = [r for r in front_rows(study) if spec.percent(PeftConfig.from_dict(r["config"])) <= max_percent]
    if not rows:
        raise SystemExit(f"{study_dir}: no front member at <= {max_percent:.3f} % parameters")
    return [(PeftConfig.from_dict(r["config"]), f"{study_dir} trial {r['number']}")
            for r in spread_along_front(rows, FOUND_PER_TASK)]


def answer_configs(study_dir: str, max_percent: float) -> list[tuple[Any, str, str]]:
    """Up to FOUND_PER_TASK members of a promoted study's answer at <= max_percent, the best selection-split
    mean first; with their source and what chose them."""
    from autopeft.report import answer_rows
    from autopeft.space import PeftConfig
    from autopeft.tasks import Selection
    from autopeft.workflow import open_existing

    study = open_existing(study_dir, None, "autopeft")
    members = sorted((m for m in answer_rows(study) if m["percent"] <= max_percent),
                     key=lambda m: -m["selection_score"])[:FOUND_PER_TASK]
    if not members:
        raise SystemExit(f"{study_dir}: no answer member at <= {max_percent:.3f} % parameters (is it promoted?)")
    chosen_by = f"{Selection.from_dict(study.user_attrs['selection']).describe()}, at {members[0]['fidelity']}"
    return [(PeftConfig.from_dict(m["config"]), f"{study_dir} trials {m['numbers']}", chosen_by) for m in members]


def compute(study_dir: str) -> dict[str, Any]:
    """A search's compute: train example-epochs of its evaluated trials, as a fraction of the reference
    protocol's search on the same train split; its wall time, as the sum of its completed trials' times
    (`trials_s`: a trial's time runs from its proposal to its score, so this leaves out the time lost
    to interruptions) and as the span from the first trial's start to the last one's end (`wall_s`)."""
    from optuna.trial import TrialState
    from promotion_pays import compute as example_epochs

    from autopeft.tasks import TaskSource
    from autopeft.workflow import open_existing

    study = open_existing(study_dir, None, "autopeft")
    n_train = len(TaskSource.from_dict(study.user_attrs["task_source"]).load().train)
    spent = example_epochs(study)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    busy = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return {"study": study_dir, "example_epochs": spent, "reference": REFERENCE_TRIALS * REFERENCE_EPOCHS * n_train,
            "fraction": spent / (REFERENCE_TRIALS * REFERENCE_EPOCHS * n_train), "trials_s": busy, "wall_s": wall}


def as_json(config: Any) -> dict[str, Any] | str:
    """A configuration as a row stores it: "full", or `PeftConfig.to_dict()`."""
    return config if isinstance(config, (str, dict)) else config.to_dict()


def key(task: str, method: str, config: Any, seed: int) -> str:
    return json.dumps([task, method, as_json(config), seed], sort_keys=True)


def read_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []


def _transferred_by_dev(source_found, rows, source: str, args) -> list[tuple[Any, str, str]]:
    """The source task's found configuration with the higher mean over its seeds there; [] until they are run."""
    means = []
    for config, origin in source_found:
        scores = [r["score"] for r in rows if r["task"] == source and r["method"] == "found"
                  and r["config"] == config.to_dict()]
        if len(scores) < len(args.seeds):
            return []
        means.append((float(np.mean(scores)), config, origin))
    _, config, origin = max(means, key=lambda m: m[0])
    return [(config, f"{origin} (found on {source})", f"{source}: dev (the split reported)")]


def _runs(task: str, method: str, configs: list[tuple[Any, str, str]], seeds: list[int]) -> list[dict[str, Any]]:
    """One run per configuration and seed; `rank`: the configuration's place in `configs` (0: chosen first)."""
    return [{"task": task, "method": method, "config": config, "seed": seed, "source": source, "selected_on": chosen_by,
             "rank": rank} for rank, (config, source, chosen_by) in enumerate(configs) for seed in seeds]


def plan(args, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs still to do: dicts with task, method, config, seed, source."""
    from autopeft.models import load_model
    from autopeft.modules import model_spec

    studies = dict(s.split("=", 1) for s in args.study)
    spec = model_spec(load_model(MODEL, 2))  # % parameters do not depend on the head's size here
    singles = single_modules(spec)
    max_percent = max(spec.percent(c) for m, c in singles.items() if m != "full_ft")
    runs = []
    found: dict[str, list[tuple[Any, str]]] = {}
    for task in args.tasks:
        for method in args.methods:
            if method in singles:
                configs = [(singles[method], "", "not selected: the standard size")]
            elif method == "answer":
                if task not in studies:
                    continue
                configs = answer_configs(studies[task], max_percent)
            elif method == "found":
                if task not in studies:
                    continue  # its search is not done yet
                found[task] = found_configs(studies[task], spec, max_percent)
                configs = [(c, s, "dev (the split reported)") for c, s in found[task]]
            else:  # transferred
                source = args.transfer_from
                if not source or task == source or source not in studies:
                    continue
                from autopeft.workflow import open_existing

                if open_existing(studies[source], None, "autopeft").user_attrs.get("promotion"):
                    config, origin, chosen_by = answer_configs(studies[source], max_percent)[0]
                    configs = [(config, f"{origin} (answer on {source})", f"{source}: {chosen_by}")]
                else:  # the first table: the source's better found configuration by its dev runs
                    configs = _transferred_by_dev(found.get(source) or found_configs(studies[source], spec,
                                                                                      max_percent), rows, source, args)
                    if not configs:
                        continue  # the source's found runs are not all done yet
            runs += _runs(task, method, configs, args.seeds)
    done = {key(r["task"], r["method"], r["config"], r["seed"]) for r in rows}
    return [r for r in runs if key(r["task"], r["method"], r["config"], r["seed"]) not in done]


def reuse_singles(jobs: list[dict[str, Any]], singles_rows: list[dict[str, Any]], origin: str,
                  train_sizes: dict[str, int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, jobs left): a planned run whose configuration is a standard module takes that module's row (same
    task, seed, `full` fidelity and train size: `train_sizes[task]`) instead of training it again; the row says so
    in `reused_from`."""
    from autopeft.training import FIDELITIES

    def at_full(row: dict[str, Any]) -> bool:
        trained = {k: v for k, v in row["fidelity"].items() if k != "train_size"}
        return (trained == replace(FIDELITIES["full"], seed=row["seed"]).to_dict()
                and row["fidelity"].get("train_size") == train_sizes.get(row["task"]))

    singles = {key(r["task"], "", r["config"], r["seed"]): r
               for r in singles_rows if r["method"] in SINGLES and at_full(r)}
    rows, left = [], []
    for job in jobs:
        single = singles.get(key(job["task"], "", job["config"], job["seed"]))
        if single is None:
            left.append(job)
            continue
        rows.append({**single, "method": job["method"], "source": job["source"], "selected_on": job["selected_on"],
                     "rank": job["rank"], "reused_from": f"{origin}: the {single['method']} row"})
    return rows, left


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run(job: dict[str, Any], sst2_train: int) -> dict[str, Any]:
    """Train one run; its JSON line."""
    from autopeft.frozen import open_states_cache
    from autopeft.training import FIDELITIES, train_and_evaluate

    task = load(job["task"], sst2_train)
    fidelity = replace(FIDELITIES["full"], seed=job["seed"])
    result = train_and_evaluate(MODEL, task, job["config"], fidelity, progress=False, cache=open_states_cache(None))
    return {"task": job["task"], "method": job["method"], "config": as_json(job["config"]), "percent": result.percent,
            "seed": job["seed"], "fidelity": {**fidelity.to_dict(), "train_size": len(task.train)},
            "metrics": result.metrics, "score": result.score, "wall_s": result.wall_time_s, "source": job["source"],
            "selected_on": job["selected_on"], "rank": job["rank"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), type=lambda s: s.split(","))
    parser.add_argument("--methods", default=",".join(METHODS), type=lambda s: s.split(","))
    parser.add_argument("--seeds", default="10,11,12", type=lambda s: [int(x) for x in s.split(",")],
                        help="training seeds; the searches use 0 and 1")
    parser.add_argument("--study", action="append", default=[], metavar="TASK=DIR",
                        help="the search of a task's 'found' or 'answer'")
    parser.add_argument("--transfer-from", metavar="TASK", help="the source task of 'transferred'")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sst2-train", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--reuse-singles", type=Path, metavar="JSONL",
                        help="a run of a standard module's configuration takes its row from this file (the first "
                             "table's) instead of training it again")
    parser.add_argument("--summary", action="store_true", help="print the table from OUT and stop")
    parser.add_argument("--compute", action="store_true", help="print each --study's compute as JSON and stop")
    args = parser.parse_args()
    bad = [m for m in args.methods if m not in METHODS] + [t for t in args.tasks if t not in TASKS]
    if bad:
        raise SystemExit(f"unknown method or task {bad}; methods: {', '.join(METHODS)}; tasks: {', '.join(TASKS)}")
    if args.compute:
        sys.path.insert(0, str(HERE))
        for spec in args.study:
            task, folder = spec.split("=", 1)
            print(json.dumps({"task": task, **compute(folder)}))
        return
    rows = read_rows(args.out)
    if args.summary:
        from glue_report import report

        print(report(rows))
        return
    jobs = plan(args, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.reuse_singles:
        if not args.reuse_singles.is_file():
            raise SystemExit(f"--reuse-singles {args.reuse_singles}: no such file; give the first table's rows")
        train_sizes = {task: len(load(task, args.sst2_train).train) for task in {j["task"] for j in jobs}}
        reused, jobs = reuse_singles(jobs, read_rows(args.reuse_singles), str(args.reuse_singles), train_sizes)
        with args.out.open("a") as f:
            f.writelines(json.dumps(row) + "\n" for row in reused)
        for row in reused:
            print(f"{row['task']:<6} {row['method']:<11} seed {row['seed']}: {row['score']:.2f} ({row['reused_from']})")
    print(f"{len(jobs)} run(s) to do, {len(read_rows(args.out))} in {args.out}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    spawn = multiprocessing.get_context("spawn")  # not fork: this process has torch's thread pools running
    with ProcessPoolExecutor(max_workers=args.workers, initializer=_init_worker, mp_context=spawn) as pool:
        futures = [pool.submit(run, job, args.sst2_train) for job in jobs]
        for future in as_completed(futures):
            row = future.result()
            with args.out.open("a") as f:  # only this process writes: whole lines, one per run
                f.write(json.dumps(row) + "\n")
            print(f"{row['task']:<6} {row['method']:<11} seed {row['seed']}: {row['score']:.2f} "
                  f"@ {row['percent']:.3f} % in {row['wall_s']:.0f} s", flush=True)
    transferred = any(r["method"] == "transferred" for r in read_rows(args.out))  # the jobs run are in OUT now
    if "transferred" in args.methods and args.transfer_from and not transferred:
        print("rerun to add the transferred runs once the source's found runs are in", file=sys.stderr)


if __name__ == "__main__":
    main()
