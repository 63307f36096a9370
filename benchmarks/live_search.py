"""Issue-4 goal without the table's restriction: real SAAS searches against random search.

`replay.py` restricts every sampler to a table's rows. That can handicap Bayesian
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
(majority-class dev score, the space's largest %)), in two ways:
- own scores: of every trial's score with the search's training seed, as a search reports it.
  One seed's score is noisy, and the front keeps the lucky ones, so this favours the search
  with more trials;
- held-out seeds: each search's front (chosen by its own scores) rescored by the mean of other
  training seeds (`--heldout-seeds`, trained where the table lacks them): what the front's
  configurations are worth without the luck of the seed that picked them. Random search's
  fronts are rescored from the table.

A training seed also draws the training subset that every configuration of a search
shares, so one seed's scores are higher or lower as a whole: SAAS and random search are
compared with the same training seed, one --out folder per seed, and `--combine` pools
the comparisons of several folders (folders with the same training seed are merged, so a
new set of searches, given other search seeds with `--first-seed`, can join earlier ones).

Usage:
    cd benchmarks
    python live_search.py --table data/sst2_minilm_low_1050.csv --seeds 10 --jobs 2 --out results/live_seed0
    python live_search.py --table data/sst2_minilm_low_1050.csv --seeds 5 --jobs 2 --train-seed 1 \
        --heldout-seeds 0,2 --out results/live_seed1
    python live_search.py --table data/sst2_minilm_low_1050.csv --combine results/live_seed0 results/live_seed1 \
        --out results/live_pooled
Results in --out: evaluations.csv (every new training, in the table's format),
runs.jsonl (one line per finished search; finished searches are skipped on a rerun, and
an unfinished one restarts with its trainings taken from evaluations.csv), fronts.jsonl
(each search's front with its held-out scores), summary.json,
hypervolume.png, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from replay import _setup, first_reaching
from autopeft.space import PeftConfig
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


class Scores:
    """Scores at the table's fidelity by training seed: the table's, earlier trainings'
    (evaluations.csv), or a new training, which is appended to evaluations.csv."""

    def __init__(self, table_path: Path, evaluations: Path, task: str) -> None:
        self.table_path, self.evaluations, self.task = table_path, evaluations, task
        self._known: dict[int, dict[str, tuple[float, float | None]]] = {}
        self._train = None

    def get(self, config: PeftConfig, seed: int, label: str) -> tuple[float, float | None]:
        """(score, training seconds; None for a table row) of `config` with training seed `seed`."""
        if seed not in self._known:
            self._known[seed] = known_scores(self.table_path, self.evaluations, seed)
        known, key = self._known[seed], _config_key(config)
        if key not in known:
            if self._train is None:
                self._train = seed_trainer(self.task)
            result = self._train(config, seed)
            known[key] = result.score, result.wall_time_s
            with self.evaluations.open("a", newline="") as f:  # one short line per append: safe beside another worker
                csv.DictWriter(f, fieldnames=COLUMNS).writerow(_format_row(
                    label, config, result.score, result.percent, result.trainable_params, seed, result.wall_time_s,
                    "saasbo-live", self.task))
        return known[key]


def run_search(table_path: str, out_dir: str, seed: int, budget: int, n_init: int, train_seed: int) -> dict:
    """One SAAS search of `budget` trials over the whole space; returns its trial-ordered results."""
    import torch

    torch.set_num_threads(1)
    import optuna

    from autopeft.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, spec, space, _ = _setup(Path(table_path))
    scores = Scores(Path(table_path), Path(out_dir) / "evaluations.csv", table_task(rows))
    # calibration_pairs=0: as when its results were recorded (the table holds one training seed per row)
    sampler = make_sampler("saasbo", space, seed=seed, n_init=n_init, percent_fn=spec.percent, fit="map",
                           calibration_pairs=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    trials = []
    for number in range(budget):
        trial = study.ask()
        for name, dist in space.optuna_distributions().items():
            trial.suggest_categorical(name, dist.choices)
        config = space.from_params(trial.params)
        percent = spec.percent(config)
        score, train_s = scores.get(config, train_seed, f"live{seed}.{number}")
        trials.append({"config": _config_key(config), "score": score, "percent": percent, "trained_s": train_s,
                       "proposal_s": sampler.last_proposal_seconds})
        study.tell(trial, [score, percent])
        print(f"seed {seed:>2} trial {number:>2}: {config.describe():<44} {score:6.2f} {percent:6.3f}% "
              + ("(table)" if train_s is None else f"{train_s:.1f}s"), flush=True)
    return {"seed": seed, "budget": budget, "n_init": n_init, "train_seed": train_seed,
            "table": Path(table_path).name, "trials": trials}


def score_front(table_path: str, out_dir: str, run: dict, heldout_seeds: list[int]) -> dict:
    """The search's front (its non-dominated trials by its own scores), each configuration scored
    with the held-out training seeds: what the front's configurations are worth without the
    luck of the seed that picked them."""
    import torch

    from autopeft.search.pareto import pareto_mask

    torch.set_num_threads(1)
    trials = run["trials"]
    scores = Scores(Path(table_path), Path(out_dir) / "evaluations.csv", table_task(load_table(Path(table_path))))
    front = []
    for t, on_front in zip(trials, pareto_mask([t["score"] for t in trials], [t["percent"] for t in trials])):
        if on_front:
            config = PeftConfig.from_dict(json.loads(t["config"]))
            front.append({"config": t["config"], "percent": t["percent"],
                          "scores": {str(s): scores.get(config, s, f"front{run['seed']}")[0] for s in heldout_seeds}})
    print(f"seed {run['seed']:>2}: front of {len(front)} scored with seeds {heldout_seeds}", flush=True)
    return {"seed": run["seed"], "heldout_seeds": heldout_seeds, "front": front}


def front_hypervolume(select: np.ndarray, values: np.ndarray, percents: np.ndarray, ref) -> float:
    """Hypervolume of the front chosen by `select` scores, each point scored by `values` instead.

    With values = select this is the plain hypervolume of the points.
    """
    from autopeft.search.pareto import hypervolume, pareto_mask

    front = pareto_mask(select, percents)
    return hypervolume(values[front], percents[front], *ref)


def bootstrap_se(hv_of, n_rows: int, budget: int, rng: np.random.Generator, n_boot: int = 200, draws: int = 50) -> float:
    """Standard error of random search's mean hypervolume at `budget`, the table being one sample.

    `hv_of(indices)` is the hypervolume of a random search that drew those rows. Each
    bootstrap table resamples the rows with replacement; its random searches are `budget`
    draws from it.
    """
    means = []
    for _ in range(n_boot):
        table = rng.integers(n_rows, size=n_rows)
        means.append(np.mean([hv_of(table[rng.permutation(n_rows)[:budget]]) for _ in range(draws)]))
    return float(np.std(means, ddof=1))


def _sd(values: np.ndarray) -> float:
    """Sample standard deviation (0 for a single value)."""
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


@dataclass
class World:
    """The searches trained with one training seed (one --out folder): runs and their scored fronts.

    A training seed also draws the training subset, which all configurations share, so
    scores differ between seeds as a whole (a 'world'); SAAS and random search are compared
    within a world.
    """

    train_seed: int
    runs: list[dict]
    fronts: dict[int, dict]


def compare(worlds: list[World], hv_saas, hv_random, n_rows: int, random_budget: int, picks: np.ndarray,
            rng: np.random.Generator) -> dict:
    """SAAS at its budget against random search at `random_budget`, in each world and pooled.

    `hv_saas(world)`: the world's SAAS hypervolumes (shape: searches); `hv_random(world,
    indices)`: that of a random search that drew those rows; `picks`: the random searches'
    rows (shape: draws x random_budget). The pooled difference weighs each world by its
    number of searches; its variance is the SAAS means' plus random's, whose error as an
    estimate from one table (which the worlds share) is a bootstrap over the table's rows.
    p: two-sided t-test; p_above: one-sided, for SAAS above random.
    """
    from scipy import stats

    n = np.array([len(w.runs) for w in worlds])
    weights = n / n.sum()
    entries = []
    for w in worlds:
        saas, random = hv_saas(w), np.array([hv_random(w, i) for i in picks])
        entries.append({"train_seed": w.train_seed, "searches": len(saas), "saas": [float(saas.mean()), _sd(saas)],
                        "random": [float(random.mean()), _sd(random)], "difference": float(saas.mean() - random.mean()),
                        "saas_var_of_mean": float(saas.var(ddof=1) / len(saas)) if len(saas) > 1 else float("nan")})
    random_se = bootstrap_se(lambda i: sum(k * hv_random(w, i) for k, w in zip(weights, worlds)), n_rows,
                             random_budget, rng)
    diff = float(sum(k * e["difference"] for k, e in zip(weights, entries)))
    se = float(np.sqrt(sum(k**2 * e["saas_var_of_mean"] for k, e in zip(weights, entries)) + random_se**2))
    tested = np.isfinite(se) and se > 0
    p = float(2 * stats.t.sf(abs(diff) / se, df=n.sum() - 1)) if tested else float("nan")
    p_above = float(stats.t.sf(diff / se, df=n.sum() - 1)) if tested else float("nan")
    return {"worlds": entries, "difference": diff, "random_bootstrap_se": random_se, "se": se, "p": p,
            "p_above": p_above}


def summarise(table_path: Path, worlds: list[World], budget: int, random_budget: int, draws: int, out: Path) -> dict:
    """Compare each world's SAAS searches with random search drawn from the table; write the results."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from autopeft.search.pareto import hypervolume, hypervolume_history

    rows, _, _, ref = _setup(table_path)
    heldout_complete = all(r["seed"] in w.fronts for w in worlds for r in w.runs)
    heldout = {w.train_seed: w.fronts[w.runs[0]["seed"]]["heldout_seeds"] for w in worlds} if heldout_complete else {}
    needed = {w.train_seed for w in worlds} | {s for seeds in heldout.values() for s in seeds}
    rows = [r for r in rows if needed <= set(r["seed_scores"])]
    percents = np.array([r["percent"] for r in rows])
    column = {s: np.array([r["seed_scores"][s] for r in rows]) for s in needed}
    rng = np.random.default_rng(0)
    picks = np.array([rng.permutation(len(rows))[:random_budget] for _ in range(draws)])  # draws x random_budget

    def saas_curves(w: World) -> np.ndarray:  # searches x budget
        return np.array([hypervolume_history([t["score"] for t in r["trials"]], [t["percent"] for t in r["trials"]], *ref)
                         for r in w.runs])

    curves = {w.train_seed: (saas_curves(w), np.array([hypervolume_history(column[w.train_seed][i], percents[i], *ref)
                                                       for i in picks])) for w in worlds}
    summary = {"table": str(table_path), "n_rows": len(rows), "reference_point": ref, "budget": budget,
               "n_init": worlds[0].runs[0]["n_init"], "random_budget": random_budget, "random_draws": draws,
               "own_scores": compare(worlds, lambda w: curves[w.train_seed][0][:, budget - 1],
                                     lambda w, i: hypervolume(column[w.train_seed][i], percents[i], *ref),
                                     len(rows), random_budget, picks, rng)}
    if heldout:
        # each table row's mean score over each world's held-out seeds
        held = {seed: np.mean([column[s] for s in seeds], axis=0) for seed, seeds in heldout.items()}
        summary["heldout_seeds"] = {str(k): v for k, v in heldout.items()}
        summary["heldout"] = compare(
            worlds,
            lambda w: np.array([hypervolume([np.mean(list(f["scores"].values())) for f in w.fronts[r["seed"]]["front"]],
                                            [f["percent"] for f in w.fronts[r["seed"]]["front"]], *ref) for r in w.runs]),
            lambda w, i: front_hypervolume(column[w.train_seed][i], held[w.train_seed][i], percents[i], ref),
            len(rows), random_budget, picks, rng)
    summary["per_world"] = []
    for w in worlds:
        saas, random = curves[w.train_seed]
        trained = [t["trained_s"] for r in w.runs for t in r["trials"] if t["trained_s"] is not None]
        proposals = [t["proposal_s"] for r in w.runs for t in r["trials"][r["n_init"]:]]
        summary["per_world"].append({
            "train_seed": w.train_seed, "searches": len(w.runs),
            "saas_hv": {str(b): [float(saas[:, b - 1].mean()), _sd(saas[:, b - 1])] for b in sorted({min(25, budget), budget})},
            "random_hv": {str(b): [float(random[:, b - 1].mean()), _sd(random[:, b - 1])]
                          for b in sorted({min(25, budget), budget, random_budget})},
            "random_trials_to_match_saas": first_reaching(random.mean(0), saas[:, budget - 1].mean()),
            "saas_trials_to_reach_random": first_reaching(saas.mean(0), random[:, -1].mean()),
            "saas_trials_from_table": int(sum(t["trained_s"] is None for r in w.runs for t in r["trials"])),
            "median_trained_s": float(np.median(trained)) if trained else None,
            "median_bo_proposal_s": float(np.median(proposals)) if proposals else None})
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary, table_path)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, w in enumerate(worlds):
        for c, style, label in zip(curves[w.train_seed], ("-", "--"),
                                   (f"SAAS, whole space ({len(w.runs)} searches)", f"random, table draws ({draws})")):
            x = np.arange(1, c.shape[1] + 1)
            ax.plot(x, c.mean(0), color=f"C{k}", ls=style, label=f"training seed {w.train_seed}: {label}")
            ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), color=f"C{k}", alpha=0.1)
    ax.axvline(budget, color="k", lw=0.8, ls=":")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume of the searches' own scores")
    ax.set_title(f"Real searches on {rows[0]['task']} (mean ± std)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=120)
    return summary


def _print_summary(summary: dict, table_path: Path) -> None:
    budget, random_budget = summary["budget"], summary["random_budget"]
    ref = summary["reference_point"]
    print(f"\n{table_path.name}: {summary['n_rows']} rows; reference point (score {ref[0]:.2f}, {ref[1]:.2f}%); "
          f"random search: {summary['random_draws']} draws of {random_budget} rows\n")
    print(f"| hypervolume of | training seed | SAAS searches | SAAS @ {budget} | random @ {random_budget} | difference |"
          "\n|---|---|---|---|---|---|")
    for name, key in (("own scores", "own_scores"), ("fronts rescored by the held-out seeds", "heldout")):
        if key not in summary:
            print("\n(no held-out scores: some searches' fronts are not scored yet)")
            continue
        c = summary[key]
        for e in c["worlds"]:
            print(f"| {name} | {e['train_seed']} | {e['searches']} | {e['saas'][0]:.2f} ± {e['saas'][1]:.2f} | "
                  f"{e['random'][0]:.2f} ± {e['random'][1]:.2f} | {e['difference']:+.2f} |")
        print(f"| {name} | pooled | {sum(e['searches'] for e in c['worlds'])} | | | **{c['difference']:+.2f}** ± "
              f"{c['se']:.2f} (random's bootstrap SE {c['random_bootstrap_se']:.2f}), p = {c['p']:.3f} "
              f"(one-sided, SAAS above: {c['p_above']:.3f}) |")
    for e in summary["per_world"]:
        print(f"\nseed {e['train_seed']}: random search's mean reaches SAAS @ {budget} after "
              f"{e['random_trials_to_match_saas'] or '> ' + str(random_budget)} trials; SAAS's mean reaches random @ "
              f"{random_budget} after {e['saas_trials_to_reach_random'] or '> ' + str(budget)}; "
              f"{e['saas_trials_from_table']} of {budget * e['searches']} SAAS trials were table rows")


def read_results(out_dir: Path, table: Path, budget: int, n_init: int) -> tuple[dict[int, dict], dict[int, dict]]:
    """(search seed -> run, search seed -> scored front) of an --out folder; refuses other settings."""
    runs, fronts = {}, {}
    runs_path, fronts_path = out_dir / "runs.jsonl", out_dir / "fronts.jsonl"
    if runs_path.exists():
        for r in map(json.loads, runs_path.read_text().splitlines()):
            if (r["table"], r["budget"], r["n_init"]) != (table.name, budget, n_init):
                raise SystemExit(f"{runs_path} holds searches of {r['table']} with budget {r['budget']} and init "
                                 f"{r['n_init']}; give matching options or another --out")
            runs[r["seed"]] = r
    if len({r["train_seed"] for r in runs.values()}) > 1:
        raise SystemExit(f"{runs_path} mixes training seeds; it must hold one")
    if fronts_path.exists():
        fronts = {f["seed"]: f for f in map(json.loads, fronts_path.read_text().splitlines())}
    return runs, fronts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10, help="SAAS searches (search seeds F .. F+N-1)")
    parser.add_argument("--first-seed", type=int, default=0, help="F, the first search seed")
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--init", type=int, default=8, help="initial random trials (autopeft search's default)")
    parser.add_argument("--train-seed", type=int, default=0, help="training seed of every trial")
    parser.add_argument("--heldout-seeds", default="1,2",
                        help="training seeds that rescore each search's front ('' for none; the table must hold them)")
    parser.add_argument("--random-budget", type=int, default=200)
    parser.add_argument("--random-draws", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "live_search")
    parser.add_argument("--summary-only", action="store_true", help="only summarise the searches in runs.jsonl")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="DIR",
                        help="summarise these --out folders (one training seed each; folders with the same seed "
                             "are merged) together into --out; runs nothing")
    args = parser.parse_args()
    if args.first_seed < 0:
        parser.error("--first-seed must be at least 0")
    if min(args.seeds, args.budget, args.init, args.random_budget, args.random_draws) < 1:
        parser.error("--seeds, --budget, --init, --random-budget and --random-draws must be at least 1")
    rows = load_table(args.table)
    if args.random_budget > len(rows):
        parser.error(f"--random-budget {args.random_budget} exceeds the table's {len(rows)} rows")
    try:
        heldout_seeds = [int(v) for v in args.heldout_seeds.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--heldout-seeds must be comma-separated training seeds, got {args.heldout_seeds!r}")
    missing = [s for s in [args.train_seed, *heldout_seeds] if not all(s in r["seed_scores"] for r in rows)]
    if missing or args.train_seed in heldout_seeds:
        parser.error(f"the training seed and the held-out seeds must differ and be seeds the whole table holds "
                     f"(missing: {missing}); choose others")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.combine:
        by_seed: dict[int, World] = {}  # folders with the same training seed are one world
        for folder in args.combine:
            runs, fronts = read_results(folder, args.table, args.budget, args.init)
            if not runs:
                parser.error(f"{folder} holds no finished searches")
            seed = next(iter(runs.values()))["train_seed"]
            world = by_seed.setdefault(seed, World(seed, [], {}))
            if {r["seed"] for r in world.runs} & set(runs):
                parser.error(f"{folder} repeats search seeds of another --combine folder with training seed {seed}; "
                             "give each search once")
            world.runs += [runs[s] for s in sorted(runs)]
            world.fronts |= fronts
            if len({frozenset(f["heldout_seeds"]) for f in world.fronts.values()}) > 1:
                parser.error(f"{folder} scored its fronts with other held-out seeds than another folder with "
                             f"training seed {seed}; rescore one of them with --heldout-seeds")
        worlds = [by_seed[s] for s in sorted(by_seed)]
    else:
        worlds = [run_world(args, heldout_seeds)]
    summarise(args.table, worlds, args.budget, args.random_budget, args.random_draws, args.out)
    print(f"\nwrote {args.out / 'summary.json'} and {args.out / 'hypervolume.png'}")


def run_world(args: argparse.Namespace, heldout_seeds: list[int]) -> World:
    """Run the searches of --seeds that --out lacks, and score the fronts it lacks, two kinds of job on one pool."""
    runs, fronts = read_results(args.out, args.table, args.budget, args.init)
    if any(r["train_seed"] != args.train_seed for r in runs.values()):
        raise SystemExit(f"{args.out} holds searches with another training seed; give another --out")
    fronts = {s: f for s, f in fronts.items() if f["heldout_seeds"] == heldout_seeds}
    evaluations = args.out / "evaluations.csv"
    if not evaluations.exists():
        evaluations.write_text(",".join(COLUMNS) + "\n")
    todo = [] if args.summary_only else [s for s in range(args.first_seed, args.first_seed + args.seeds)
                                            if s not in runs]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, (args.out / "runs.jsonl").open("a") as runs_out, \
            (args.out / "fronts.jsonl").open("a") as fronts_out:
        def score(run: dict):
            return pool.submit(score_front, str(args.table), str(args.out), run, heldout_seeds)

        # the finished searches' fronts first (short jobs), then the new searches, each front after its search
        pending = {score(r) for seed, r in runs.items() if seed not in fronts} if heldout_seeds and not args.summary_only \
            else set()
        pending |= {pool.submit(run_search, str(args.table), str(args.out), seed, args.budget, args.init,
                                args.train_seed) for seed in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                r = fut.result()
                if "front" in r:
                    fronts_out.write(json.dumps(r) + "\n")
                    fronts_out.flush()
                    fronts[r["seed"]] = r
                    continue
                runs_out.write(json.dumps(r) + "\n")
                runs_out.flush()
                runs[r["seed"]] = r
                print(f"search seed {r['seed']} done ({time.perf_counter() - start:.0f} s so far)", flush=True)
                if heldout_seeds:
                    pending.add(score(r))
    if not runs:
        raise SystemExit(f"no searches in {args.out / 'runs.jsonl'}; run without --summary-only first")
    return World(args.train_seed, [runs[s] for s in sorted(runs)], fronts)


if __name__ == "__main__":
    main()
