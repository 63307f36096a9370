"""Is a search's front signal? Retrain every front configuration at the search's fidelity with new seeds.

For the study in STUDY_DIR: each configuration of its front (of means) is trained again with
training seeds the search never used (default 100 and 101), at the fidelity stored in the
study, through the same `train_and_evaluate` a trial calls. It reports:

- (a) each front member's reported mean against the task's constant predictor (the
  majority class, or the train mean for regression) and the margin between them;
- (b) Spearman's rho between the reported means and the new seeds' means, over the front.

Usage:
    python benchmarks/front_check.py runs/default --seeds 100,101 --out benchmarks/results/default_job
Writes OUT/front_check.json (finished trainings are kept there and reused on a rerun) and prints a table.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--seeds", default="100,101", help="training seeds the search never used")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from scipy import stats

    from autopeft.frozen import open_states_cache
    from autopeft.metrics import majority_baseline
    from autopeft.models import load_tokenizer
    from autopeft.search.results import completed_trials, front_rows
    from autopeft.space import PeftConfig
    from autopeft.training import Fidelity, train_and_evaluate
    from autopeft.tasks import TaskSource
    from autopeft.workflow import open_existing

    seeds = [int(s) for s in args.seeds.split(",")]
    study = open_existing(args.study_dir, None, "autopeft")
    used = {r["train_seed"] for r in completed_trials(study)}
    if used & set(seeds):
        raise SystemExit(f"seeds {sorted(used & set(seeds))} were used by the search; choose others")
    meta = study.user_attrs
    # the search's own data: trained on train less the selection split, scored on the selection split
    task, fidelity = TaskSource.from_dict(meta["task_source"]).splits()[0], Fidelity(**meta["fidelity"])
    tokenizer = load_tokenizer(meta["model"])
    constant = majority_baseline(task.spec, task.train.labels, task.dev.labels)["score"]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "front_check.json"
    stored = json.loads(path.read_text()) if path.is_file() else {}
    done = {(r["config"], r["seed"]): r["score"] for r in stored.get("trainings", [])}
    rows = []
    for row in front_rows(study):
        config = PeftConfig.from_dict(row["config"])
        new = []
        for seed in seeds:
            key = (config.to_json(), seed)
            if key not in done:
                result = train_and_evaluate(meta["model"], task, config, replace(fidelity, seed=seed), progress=False,
                                            tokenizer=tokenizer, cache=open_states_cache(None))
                done[key] = result.score
            new.append(done[key])
        rows.append({"trial": row["number"], "configuration": config.describe(), "percent": row["percent"],
                     "reported": row["score"], "reported_seeds": row["seeds"], "new_scores": new,
                     "new_mean": float(np.mean(new))})
        summary = {"study": str(args.study_dir), "task": meta["task"], "fidelity": meta["fidelity"], "seeds": seeds,
                   "constant_baseline": constant, "front": rows,
                   "trainings": [{"config": c, "seed": s, "score": v} for (c, s), v in done.items()]}
        path.write_text(json.dumps(summary, indent=2))
    reported = np.array([r["reported"] for r in rows])
    new_means = np.array([r["new_mean"] for r in rows])
    rho = float(stats.spearmanr(reported, new_means).statistic) if len(rows) > 2 else float("nan")
    summary.update(spearman=rho, min_margin_reported=float(reported.min() - constant),
                   min_margin_new=float(new_means.min() - constant))
    path.write_text(json.dumps(summary, indent=2))
    print(f"| trial | configuration | % params | reported (seeds) | new seeds {seeds} | new mean |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['trial']} | {r['configuration']} | {r['percent']:.3f} | {r['reported']:.2f} ({len(r['reported_seeds'])}) "
              f"| {', '.join(f'{v:.2f}' for v in r['new_scores'])} | {r['new_mean']:.2f} |")
    print(f"\nconstant predictor {constant:.2f}; smallest margin above it: reported {summary['min_margin_reported']:.2f}, "
          f"new seeds {summary['min_margin_new']:.2f}; Spearman rho (reported vs new mean) {rho:.2f}")


if __name__ == "__main__":
    main()
