"""Issue-4 table analysis: what makes the tabulated front, and how much the configuration explains.

Prints, for the tabular benchmark (benchmarks/data/rte_minilm_low.csv):
- the hypervolume of the whole table and a greedy order of the rows that build it
  (each row's added hypervolume), and the table's hypervolume without each of the
  first rows of that order;
- the hypervolume of every row with a given parallel-adapter size (--subset-pa);
- how much of the score variance the configuration explains: 10-fold cross-validated
  R^2 of a random forest and of a ridge regression on the encoded configuration
  (log2(1 + size) for SA/PA/PT, the 6 layer bits);
- for a table with several training seeds per configuration: the seed noise (the
  standard deviation of one configuration's scores across seeds) and the share of the
  single-evaluation score variance that lies between configurations;
- with --holdout-seeds: everything above on the table without these training seeds, and
  whether its order holds up under them: the Spearman correlation of the two means, where
  the table's best rows rank under the held-out seeds and, with --runs, each replay's front
  re-scored with the held-out seeds (as a user retraining the front would see it);
- with --runs (a replay's runs.jsonl): for each sampler, the hypervolume of every seed's
  first --budget trials, and whether they include the table's best-scoring row.

Usage: python benchmarks/table_analysis.py [--subset-pa 48,96]
       [--holdout-seeds 3,4]
       [--runs results/replay_sst2/runs.jsonl --labels saas-map,random --budgets 50,200]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_score

from autopeft.search.pareto import hypervolume, pareto_mask

from replay import _setup

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=HERE / "data" / "rte_minilm_low.csv")
    parser.add_argument("--subset-pa", default="48,96", help="parallel-adapter sizes of the subset to evaluate")
    parser.add_argument("--greedy", type=int, default=4, help="rows of the greedy order to show")
    parser.add_argument("--holdout-seeds", help="training seeds left out of the analysis, to check its order against")
    parser.add_argument("--runs", type=Path, help="a replay's runs.jsonl: per-seed hypervolume and the best row")
    parser.add_argument("--labels", default="saas-map,random", help="samplers of --runs to show")
    parser.add_argument("--budgets", default="50,200", help="budgets of --runs to show (one per label, or one for all)")
    args = parser.parse_args()
    rows, _, _, ref = _setup(args.table)
    held = split_holdout(rows, {int(s) for s in args.holdout_seeds.split(",")}) if args.holdout_seeds else None
    scores = np.array([r["score"] for r in rows])
    percents = np.array([r["percent"] for r in rows])

    def hv(idx) -> float:
        idx = list(idx)
        return hypervolume(scores[idx], percents[idx], *ref) if idx else 0.0

    def front(idx) -> np.ndarray:
        idx = np.asarray(list(idx))
        return idx[pareto_mask(scores[idx], percents[idx])]

    everything = range(len(rows))
    print(f"table: {len(rows)} rows, hypervolume {hv(everything):.2f} from reference (score {ref[0]:.2f}, {ref[1]:.2f}%)")
    chosen: list[int] = []
    for _ in range(args.greedy):
        best = max((i for i in everything if i not in chosen), key=lambda i: hv(chosen + [i]))
        gain = hv(chosen + [best]) - hv(chosen)
        chosen.append(best)
        r = rows[best]
        print(f"  + row {r['trial']:>3} {r['config'].describe():<36} {r['score']:.2f} at {r['percent']:.2f}%: "
              f"+{gain:.2f} -> {hv(chosen):.2f}; table without it: {hv(i for i in everything if i != best):.2f}")
    sizes = {int(v) for v in args.subset_pa.split(",")}
    subset = [i for i, r in enumerate(rows) if r["config"].parallel_adapter in sizes]
    print(f"rows with PA in {sorted(sizes)}: {len(subset)}, hypervolume {hv(subset):.2f}")

    X = np.array([[np.log2(1 + r["config"].serial_adapter), np.log2(1 + r["config"].parallel_adapter),
                   np.log2(1 + r["config"].prefix_length), *map(int, r["config"].layers)] for r in rows])
    folds = KFold(10, shuffle=True, random_state=0)
    for name, model in (("random forest", RandomForestRegressor(200, min_samples_leaf=10, random_state=0)),
                        ("ridge", RidgeCV(alphas=np.logspace(-2, 3, 20)))):
        r2 = cross_val_score(model, X, scores, cv=folds, scoring="r2")
        print(f"score explained by the configuration, {name}: 10-fold R^2 {r2.mean():.2f} ± {r2.std():.2f}")
    best = int(np.argmax(scores))
    seeded = [r for r in rows if len(r["seed_scores"]) > 1]
    if seeded:
        per_seed = [np.array(list(r["seed_scores"].values())) for r in seeded]
        within = np.mean([v.var(ddof=1) for v in per_seed])
        total = np.concatenate(per_seed).var(ddof=1)
        print(f"{len(seeded)} configurations with {min(map(len, per_seed))}-{max(map(len, per_seed))} seeds: seed noise "
              f"(std of one configuration's scores) {np.sqrt(within):.2f}; single-evaluation score std "
              f"{np.sqrt(total):.2f}; share of its variance between configurations {1 - within / total:.2f}")
        for seed in sorted(rows[best]["seed_scores"]):
            one = np.array([r["seed_scores"].get(seed, np.nan) for r in rows])
            print(f"  training seed {seed}: best row {rows[int(np.nanargmax(one))]['trial']}; the mean's best row "
                  f"{rows[best]['trial']} scores {one[best]:.2f}, rank {int(np.sum(one > one[best])) + 1}")
    if held is not None:
        print_holdout(rows, scores, held, args.holdout_seeds)
        table_front = front(everything)
        print(f"  the table's front re-scored with them: hypervolume "
              f"{hypervolume(held[table_front], percents[table_front], *ref):.2f} "
              f"(all rows under them: {hypervolume(held, percents, *ref):.2f})")
    for size in sorted({r["config"].parallel_adapter for r in rows}):
        group = scores[[r["config"].parallel_adapter == size for r in rows]]
        print(f"  PA {size:>3}: {len(group):>2} rows, mean score {group.mean():.2f} (all rows {scores.mean():.2f})")
    if args.runs:
        print(f"best-scoring row: {rows[best]['trial']} {rows[best]['config'].describe()} "
              f"{scores[best]:.2f} at {percents[best]:.2f}%")
        runs = [json.loads(line) for line in args.runs.read_text().splitlines()]
        row_of = {(scores[i], percents[i]): i for i in everything}
        labels, budgets = args.labels.split(","), [int(b) for b in args.budgets.split(",")]
        for label, budget in zip(labels, budgets * len(labels) if len(budgets) == 1 else budgets):
            own = sorted((r for r in runs if r["label"] == label and len(r["scores"]) >= budget), key=lambda r: r["seed"])
            hvs = [hypervolume(np.array(r["scores"][:budget]), np.array(r["percents"][:budget]), *ref) for r in own]
            # a replay is told the stored (score, %) of each row it proposes, so rows are found by exact value
            told = [set(zip(r["scores"][:budget], r["percents"][:budget])) for r in own]
            if any(key not in row_of for t in told for key in t):
                raise SystemExit(f"{args.runs} holds rows this table lacks: give --runs replays of this table"
                                 + (f" without the held-out seeds {args.holdout_seeds}" if held is not None else ""))
            n_evaluated = {i: sum((scores[i], percents[i]) in t for t in told) for i in [best, *chosen]}
            with_best = [h for h, t in zip(hvs, told) if (scores[best], percents[best]) in t]
            without = [h for h, t in zip(hvs, told) if (scores[best], percents[best]) not in t]
            print(f"  {label} @ {budget}: hypervolume per seed {' '.join(f'{h:.1f}' for h in hvs)}; "
                  f"best row evaluated in {n_evaluated[best]} of {len(own)} seeds "
                  f"(mean {_mean_or_dash(with_best)} with it, {_mean_or_dash(without)} without)")
            print("    rows of the greedy order, seeds that evaluated them: "
                  + ", ".join(f"row {rows[i]['trial']} {n_evaluated[i]}" for i in chosen))
            if held is not None:
                rescored = []
                for evaluated in told:
                    run_front = front(row_of[key] for key in evaluated)
                    rescored.append(hypervolume(held[run_front], percents[run_front], *ref))
                print(f"    its front re-scored with the held-out seeds: {np.mean(rescored):.1f} ± "
                      f"{np.std(rescored, ddof=1) if len(rescored) > 1 else 0.0:.1f}")


def _mean_or_dash(values: list[float]) -> str:
    """The mean to one decimal, or "–" for no values (no seed on that side)."""
    return f"{np.mean(values):.1f}" if values else "–"


def split_holdout(rows: list[dict], held_out: set[int]) -> np.ndarray:
    """Leave the training seeds `held_out` out of `rows` (each `score` becomes the mean of the
    other seeds, as in a table without them); return the held-out seeds' mean score per row."""
    lacking = [r["trial"] for r in rows if not held_out <= set(r["seed_scores"]) or not set(r["seed_scores"]) - held_out]
    if lacking:
        raise SystemExit(f"rows {lacking[:5]} lack seeds {sorted(held_out)} or any other seed; "
                         f"give --holdout-seeds that every row has, leaving at least one other")
    held = np.array([np.mean([r["seed_scores"][s] for s in sorted(held_out)]) for r in rows])
    for r in rows:
        r["seed_scores"] = {s: v for s, v in r["seed_scores"].items() if s not in held_out}
        r["score"] = float(np.mean(list(r["seed_scores"].values())))
    return held


def print_holdout(rows: list[dict], scores: np.ndarray, held: np.ndarray, held_out: str) -> None:
    """How well the table's scores predict the held-out seeds' mean `held` (both shape (n_rows,))."""
    print(f"seeds {held_out} held out: Spearman of the table's scores with theirs {spearmanr(scores, held).statistic:.2f}; "
          f"the table's best rows, ranked under the held-out seeds:")
    for i in np.argsort(-scores)[:5]:
        print(f"  row {rows[i]['trial']:>3} {rows[i]['config'].describe():<36} {scores[i]:.2f} -> {held[i]:.2f}, "
              f"rank {int(np.sum(held > held[i])) + 1} of {len(rows)}")

if __name__ == "__main__":
    main()
