"""Does spending trials on replicates pay? The default sampler with and without them, replayed on a 3-seed table.

Each replay runs the default sampler (MAP-SAAS + qLogNEHVI, `--init 8`) through Optuna as a
search does, restricted to the table's configurations (`make_sampler(..., candidates=...)`),
and tells each trial a stored score instead of training:

- a configuration's first evaluation takes the score of training seed ``w = replay seed % 2``;
- a replicate (arm "replicates": ``calibration_pairs=2``, ``replicates=0.2``, ``max_seeds=2``) takes the other seed of
  0-1, ``1 - w``, the one the configuration has not used yet;
- seed 2 is never seen by a search: it is held out to rescore the fronts.

The arm "none" is the same sampler with ``calibration_pairs=0``, ``replicates=0``. Both arms of a replay seed share
the sampler seed, so their initial designs are the same and the comparison is paired.

At each budget (the first k trials of one run of the largest budget; the sampler is
sequential, so a shorter run makes exactly these proposals) a search reports the front of
its configurations' mean scores. Two hypervolumes, reference point as in `replay.py`:

- own: the hypervolume of those means, what the search reports;
- held-out: the same front, each member scored by seed 2, what a user gets on new seeds.

Usage:
    python benchmarks/replicate_replay.py --seeds 20 --jobs 2
Results: benchmarks/results/replicate_replay/runs.jsonl (one line per run; finished runs are
skipped on a rerun), summary.json, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TABLE = HERE / "data" / "sst2_minilm_low_1050.csv"
RESULTS = HERE / "results" / "replicate_replay"
HELDOUT_SEED = 2
ARMS = {"replicates": 0.2, "none": 0.0}  # replicates' fraction; the "replicates" arm also has 2 calibration pairs


def run_one(table_path: str, arm: str, seed: int, budget: int, n_init: int) -> dict:
    """One replay: per trial, the configuration, the training seed it took, its score and percent."""
    import torch

    torch.set_num_threads(1)
    import optuna

    from autopeft.search.attrs import REPLICATE_ATTR
    from autopeft.search.samplers import make_sampler
    from replay import _setup

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, spec, space, _ = _setup(Path(table_path))
    by_key = {r["config"].to_json(): r for r in rows}
    sampler = make_sampler("saasbo", space, seed=seed, n_init=n_init, percent_fn=spec.percent, fit="map",
                           replicates=ARMS[arm], calibration_pairs=2 if ARMS[arm] else 0, max_seeds=2,
                           candidates=[r["config"] for r in rows])
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.set_user_attr("budget", budget)
    first_seed = seed % 2
    trials = []
    for _ in range(budget):
        trial = study.ask()
        for pname, dist in space.optuna_distributions().items():
            trial.suggest_categorical(pname, dist.choices)
        key = space.from_params(trial.params).to_json()
        replicate = study.trials[trial.number].system_attrs.get(REPLICATE_ATTR)
        train_seed = first_seed if replicate is None else 1 - first_seed
        row = by_key[key]
        score = row["seed_scores"][train_seed]
        trials.append({"config": key, "train_seed": train_seed, "score": score, "percent": row["percent"],
                       "proposal_s": sampler.last_proposal_seconds})
        study.tell(trial, [score, row["percent"]])
    return {"arm": arm, "seed": seed, "budget": budget, "table": Path(table_path).name, "trials": trials}


def hypervolumes(run: dict, k: int, by_key: dict, ref) -> tuple[float, float, int]:
    """(own, held-out) hypervolume of the front of means after the first k trials, and the replicates among them."""
    from autopeft.search.pareto import hypervolume, pareto_mask

    scores: dict[str, list[float]] = {}
    for t in run["trials"][:k]:
        scores.setdefault(t["config"], []).append(t["score"])
    keys = list(scores)
    means = np.array([np.mean(scores[c]) for c in keys])
    percents = np.array([by_key[c]["percent"] for c in keys])
    front = pareto_mask(means, percents)
    heldout = np.array([by_key[c]["seed_scores"][HELDOUT_SEED] for c in keys])
    return (hypervolume(means[front], percents[front], *ref), hypervolume(heldout[front], percents[front], *ref),
            k - len(keys))


def summarise(table_path: Path, runs: list[dict], budgets: list[int], out: Path) -> dict:
    from scipy import stats

    from replay import _setup

    rows, _, _, ref = _setup(table_path)
    by_key = {r["config"].to_json(): r for r in rows}
    seeds = sorted({r["seed"] for r in runs if r["arm"] == "replicates"} & {r["seed"] for r in runs if r["arm"] == "none"})
    by_arm = {(r["arm"], r["seed"]): r for r in runs}
    summary = {"table": table_path.name, "reference_point": list(ref), "seeds": seeds, "heldout_seed": HELDOUT_SEED,
               "budgets": {}}
    print(f"\n{len(seeds)} paired replays on {table_path.name}; fronts of means rescored with seed {HELDOUT_SEED}\n")
    print("| budget | hypervolume | with replicates | without | difference (paired, ± SE) | one-sided p |")
    print("|---:|---|---:|---:|---:|---:|")
    for k in budgets:
        hv = {arm: np.array([hypervolumes(by_arm[(arm, s)], k, by_key, ref) for s in seeds]) for arm in ARMS}
        entry = {"replicates_per_search": float(hv["replicates"][:, 2].mean())}
        for j, name in enumerate(("own", "held-out")):
            a, b = hv["replicates"][:, j], hv["none"][:, j]
            diff = a - b
            se = float(diff.std(ddof=1) / np.sqrt(len(diff)))
            p = float(stats.ttest_rel(a, b, alternative="greater").pvalue)
            entry[name] = {"with": [float(a.mean()), float(a.std(ddof=1))], "without": [float(b.mean()), float(b.std(ddof=1))],
                           "difference": float(diff.mean()), "se": se, "p_greater": p}
            print(f"| {k} | {name} | {a.mean():.1f} ± {a.std(ddof=1):.1f} | {b.mean():.1f} ± {b.std(ddof=1):.1f} | "
                  f"{diff.mean():+.2f} ± {se:.2f} | {p:.3f} |")
        summary["budgets"][str(k)] = entry
    proposal = [t["proposal_s"] for r in runs for t in r["trials"][8:]]
    summary["median_proposal_s"] = float(np.median(proposal))
    print(f"\nmedian BO proposal {summary['median_proposal_s']:.2f} s; replicates per search at "
          + ", ".join(f"{k}: {summary['budgets'][str(k)]['replicates_per_search']:.1f}" for k in budgets))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="50,100")
    parser.add_argument("--init", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    from replay import read_runs, run_pending

    runs_path = args.out / "runs.jsonl"
    key = lambda r: (r["arm"], r["seed"], r["budget"])  # noqa: E731
    done = read_runs(runs_path, args.table.name, key)
    todo = [(arm, s, budgets[-1]) for s in range(args.seeds) for arm in ARMS if (arm, s, budgets[-1]) not in done]
    run_pending(run_one, [(str(args.table), *t, args.init) for t in todo], args.jobs, runs_path, done, key,
                lambda r: f"{r['arm']:<10} seed {r['seed']:>2} done")
    runs = [r for r in done.values() if r["budget"] == budgets[-1] and r["seed"] < args.seeds]
    summarise(args.table, runs, budgets, args.out)


if __name__ == "__main__":
    main()
