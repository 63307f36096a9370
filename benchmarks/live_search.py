"""Issue-4 goal without the table's restriction: real SAAS searches against random search.

`replay.py` restricts every sampler to a table's rows. That handicaps Bayesian
optimisation more than random search: BO exploits, and a finite table holds few
configurations near the best ones, while random search only needs a uniform sample,
which the table is. Here the default sampler searches the whole default MiniLM space
as `autopeft search` does (the same `make_sampler` call and defaults: SAAS fitted by
MAP, qLogNEHVI, its candidate pool and local climb, `--init 8`), and every proposal
is trained at the table's fidelity with one training seed (`table.seed_trainer`: the
`low` preset, SDPA attention); the search is told that seed's score. A proposal already
in the table is not trained again: the table holds the score that training gives.

Random search needs no new training: the table's rows are uniformly random valid
configurations of the same space, so `k` rows drawn without replacement are a random
search's first `k` trials. Its hypervolume at k is averaged over `--random-draws` draws,
scored with the same training seed. Its uncertainty as an estimate of random search on
the whole space (the table is one sample of it) is a bootstrap over the table's rows.

Hypervolume: as in replay.py (score against % trainable parameters, reference point =
(majority-class dev score, the space's largest %)).

Usage:
    python benchmarks/live_search.py --table benchmarks/data/sst2_minilm_low_1050.csv --seeds 10 \
        --jobs 2 --out benchmarks/results/live_sst2
Results in --out: evaluations.csv (every new training, in the table's format),
runs.jsonl (one line per finished search; finished searches are skipped on a rerun, and
an unfinished one restarts with its trainings taken from evaluations.csv), summary.json,
hypervolume.png, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from replay import _setup
from table import COLUMNS, _config_key, _format_row, _read, load_table, seed_trainer, table_task

HERE = Path(__file__).resolve().parent


def known_scores(table_path: Path, evaluations_path: Path, train_seed: int) -> dict[str, tuple[float, float | None]]:
    """Config key -> (score with `train_seed`, training seconds): the table's rows (seconds None)
    and the new trainings of earlier searches (evaluations_path)."""
    known = {_config_key(r["config"]): (r["seed_scores"][train_seed], None)
             for r in load_table(table_path) if train_seed in r["seed_scores"]}
    if evaluations_path.is_file():
        known.update({r["config"]: (float(r["score"]), float(r["time_s"]))
                      for r in _read(evaluations_path) if int(r["seed"]) == train_seed})
    return known


def run_search(table_path: str, out_dir: str, seed: int, budget: int, n_init: int, train_seed: int) -> dict:
    """One SAAS search of `budget` trials over the whole space; returns its trial-ordered results."""
    import torch

    torch.set_num_threads(1)
    import optuna

    from autopeft.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, spec, space, _ = _setup(Path(table_path))
    task = table_task(rows)
    evaluations = Path(out_dir) / "evaluations.csv"
    known = known_scores(Path(table_path), evaluations, train_seed)
    train = seed_trainer(task)
    sampler = make_sampler("saasbo", space, seed=seed, n_init=n_init, percent_fn=spec.percent, fit="map")
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    trials = []
    for number in range(budget):
        trial = study.ask()
        for name, dist in space.optuna_distributions().items():
            trial.suggest_categorical(name, dist.choices)
        config = space.from_params(trial.params)
        key = _config_key(config)
        percent = spec.percent(config)
        if key in known:
            score, train_s = known[key]
        else:
            result = train(config, train_seed)
            score, train_s = result.score, result.wall_time_s
            known[key] = score, train_s
            with evaluations.open("a", newline="") as f:  # one short line per append: safe beside another worker
                csv.DictWriter(f, fieldnames=COLUMNS).writerow(_format_row(
                    f"live{seed}.{number}", config, score, result.percent, result.trainable_params, train_seed,
                    train_s, "saasbo-live", task))
        trials.append({"config": key, "score": score, "percent": percent, "trained_s": train_s,
                       "proposal_s": sampler.last_proposal_seconds})
        study.tell(trial, [score, percent])
        print(f"seed {seed:>2} trial {number:>2}: {config.describe():<44} {score:6.2f} {percent:6.3f}% "
              + ("(table)" if train_s is None else f"{train_s:.1f}s"), flush=True)
    return {"seed": seed, "budget": budget, "n_init": n_init, "train_seed": train_seed,
            "table": Path(table_path).name, "trials": trials}


def random_search_curves(scores: np.ndarray, percents: np.ndarray, budget: int, draws: int, ref,
                         rng: np.random.Generator) -> np.ndarray:
    """Hypervolume histories (shape: draws x budget) of random searches drawn from the rows."""
    from autopeft.search.pareto import hypervolume_history

    picks = (rng.permutation(len(scores))[:budget] for _ in range(draws))
    return np.array([hypervolume_history(scores[i], percents[i], *ref) for i in picks])


def bootstrap_se(scores: np.ndarray, percents: np.ndarray, budget: int, ref, rng: np.random.Generator,
                 n_boot: int = 200, draws: int = 50) -> float:
    """Standard error of random search's mean hypervolume at `budget`, the table being one sample.

    Each bootstrap table resamples the rows with replacement; its random searches are
    `budget` draws from it.
    """
    from autopeft.search.pareto import hypervolume

    means = []
    for _ in range(n_boot):
        table = rng.integers(len(scores), size=len(scores))
        picks = [table[rng.permutation(len(table))[:budget]] for _ in range(draws)]
        means.append(np.mean([hypervolume(scores[i], percents[i], *ref) for i in picks]))
    return float(np.std(means, ddof=1))


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (0 for a single value)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarise(table_path: Path, runs: list[dict], budget: int, random_budget: int, draws: int, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    from autopeft.search.pareto import hypervolume_history

    rows, _, _, ref = _setup(table_path)
    train_seed = runs[0]["train_seed"]
    rows = [r for r in rows if train_seed in r["seed_scores"]]
    scores = np.array([r["seed_scores"][train_seed] for r in rows])
    percents = np.array([r["percent"] for r in rows])
    rng = np.random.default_rng(0)
    random = random_search_curves(scores, percents, random_budget, draws, ref, rng)
    random_se = bootstrap_se(scores, percents, random_budget, ref, rng)
    saas = np.array([hypervolume_history([t["score"] for t in r["trials"]], [t["percent"] for t in r["trials"]], *ref)
                     for r in runs])
    goal, at = random[:, random_budget - 1].mean(), saas[:, budget - 1]
    # SAAS's seeds against random's mean, whose own error (the bootstrap) adds to the variance
    se = np.sqrt(at.var(ddof=1) / len(at) + random_se**2) if len(at) > 1 else float("nan")
    t = (at.mean() - goal) / se
    p = float(2 * stats.t.sf(abs(t), df=len(at) - 1)) if len(at) > 1 else float("nan")
    trained = [t["trained_s"] for r in runs for t in r["trials"] if t["trained_s"] is not None]
    proposals = [t["proposal_s"] for r in runs for t in r["trials"][r["n_init"]:]]
    summary = {
        "table": str(table_path), "n_rows": len(rows), "train_seed": train_seed, "reference_point": ref,
        "saas": {"seeds": len(runs), "budget": budget, "n_init": runs[0]["n_init"],
                 "hv": {str(b): [float(saas[:, b - 1].mean()), _sd(saas[:, b - 1])]
                        for b in sorted({min(25, budget), budget})},
                 "per_seed": at.tolist(),
                 "from_table": int(sum(t["trained_s"] is None for r in runs for t in r["trials"])),
                 "median_trained_s": float(np.median(trained)) if trained else None,
                 "median_bo_proposal_s": float(np.median(proposals)) if proposals else None},
        "random": {"draws": draws, "hv": {str(b): [float(random[:, b - 1].mean()), float(random[:, b - 1].std(ddof=1))]
                                          for b in sorted({min(25, budget), budget, random_budget})},
                   "bootstrap_se_at_goal": random_se},
        "saas_minus_random_goal": float(at.mean() - goal), "p": p,
        "random_trials_to_match_saas": next((k + 1 for k, v in enumerate(random.mean(0)) if v >= at.mean() - 1e-9), None),
        "saas_trials_to_reach_goal": next((k + 1 for k, v in enumerate(saas.mean(0)) if v >= goal - 1e-9), None),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{table_path.name}: {len(rows)} rows, training seed {train_seed}; reference point "
          f"(score {ref[0]:.2f}, {ref[1]:.2f}%)\n")
    early = min(25, budget) - 1
    print(f"| search | runs | HV @ {early + 1} | HV @ {budget} | HV @ {random_budget} |\n|---|---|---|---|---|")
    print(f"| SAAS-MAP + qLogNEHVI, whole space | {len(runs)} seeds | {saas[:, early].mean():.2f} ± "
          f"{_sd(saas[:, early]):.2f} | {at.mean():.2f} ± {_sd(at):.2f} | – |")
    print(f"| random (table draws) | {draws} draws | {random[:, early].mean():.2f} ± {random[:, early].std(ddof=1):.2f} | "
          f"{random[:, budget - 1].mean():.2f} ± {random[:, budget - 1].std(ddof=1):.2f} | "
          f"{goal:.2f} ± {random[:, -1].std(ddof=1):.2f} (bootstrap SE of the mean {random_se:.2f}) |")
    print(f"\nSAAS @ {budget} − random @ {random_budget}: {summary['saas_minus_random_goal']:+.2f} (p = {p:.3f}); "
          f"random search's mean reaches SAAS @ {budget} after {summary['random_trials_to_match_saas'] or '> ' + str(random_budget)} "
          f"trials; SAAS's mean reaches random @ {random_budget} after {summary['saas_trials_to_reach_goal'] or '> ' + str(budget)}. "
          f"{summary['saas']['from_table']} of {budget * len(runs)} SAAS trials were table rows.")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (curves, label) in enumerate([(saas, f"SAAS-MAP + qLogNEHVI, whole space ({len(runs)} seeds)"),
                                         (random, f"random search, table draws ({draws})")]):
        x = np.arange(1, curves.shape[1] + 1)
        ax.plot(x, curves.mean(0), color=f"C{k}", label=label)
        ax.fill_between(x, curves.mean(0) - curves.std(0), curves.mean(0) + curves.std(0), color=f"C{k}", alpha=0.15)
    ax.axhline(goal, color="k", ls="--", lw=1, label=f"random @ {random_budget} (issue 4 goal for SAAS @ {budget})")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (score × % trainable)")
    ax.set_title(f"Real searches on {rows[0]['task']}, training seed {train_seed} (mean ± std)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=120)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10, help="SAAS searches (search seeds 0 .. N-1)")
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--init", type=int, default=8, help="initial random trials (autopeft search's default)")
    parser.add_argument("--train-seed", type=int, default=0, help="training seed of every trial")
    parser.add_argument("--random-budget", type=int, default=200)
    parser.add_argument("--random-draws", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "live_search")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the searches in runs.jsonl")
    args = parser.parse_args()
    if min(args.seeds, args.budget, args.init, args.random_budget, args.random_draws) < 1:
        parser.error("--seeds, --budget, --init, --random-budget and --random-draws must be at least 1")
    n_rows = len(load_table(args.table))
    if args.random_budget > n_rows:
        parser.error(f"--random-budget {args.random_budget} exceeds the table's {n_rows} rows")
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path, evaluations = args.out / "runs.jsonl", args.out / "evaluations.csv"
    if not evaluations.exists():
        evaluations.write_text(",".join(COLUMNS) + "\n")
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            setting = (r["table"], r["budget"], r["n_init"], r["train_seed"])
            if setting != (args.table.name, args.budget, args.init, args.train_seed):
                raise SystemExit(f"{runs_path} holds searches with (table, budget, init, train seed) = {setting}; "
                                 f"give another --out for these settings")
            done[r["seed"]] = r
    todo = [] if args.summary_only else [s for s in range(args.seeds) if s not in done]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, runs_path.open("a") as out:
        futures = [pool.submit(run_search, str(args.table), str(args.out), seed, args.budget, args.init,
                               args.train_seed) for seed in todo]
        for fut in futures:
            r = fut.result()
            out.write(json.dumps(r) + "\n")
            out.flush()
            done[r["seed"]] = r
            print(f"search seed {r['seed']} done ({time.perf_counter() - start:.0f} s so far)", flush=True)
    if not done:
        raise SystemExit(f"no searches in {runs_path}; run without --summary-only first")
    summarise(args.table, [done[s] for s in sorted(done)], args.budget, args.random_budget, args.random_draws, args.out)
    print(f"\nwrote {args.out / 'summary.json'} and {args.out / 'hypervolume.png'}")


if __name__ == "__main__":
    main()
