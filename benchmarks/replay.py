"""Issue-4 sampler replay: every sampler searches a table of real evaluations (RTE, SST-2).

Each sampler runs through Optuna exactly as in a real search (`make_sampler`, ask ->
suggest -> tell, the analytic % objective as `percent_fn`), but restricted to the
tabulated configurations (`make_sampler(..., candidates=...)`: the BO and random
samplers choose among the unseen rows; NSGA-II/MOTPE proposals are replaced by the
nearest unseen row, L1 distance in the [0, 1]^d encoding) and told the stored score
instead of training. One run per (sampler, seed) up to the largest budget; the
hypervolume at a smaller budget is that of the run's first trials (the samplers are
sequential, so a shorter run would have made exactly these proposals).

Hypervolume: score (dev accuracy) against % trainable parameters, reference point =
(majority-class dev accuracy of the table's task, the space's largest %): `pareto.hypervolume`
with `pareto.default_reference_point`, as in a real search report. The table's own
front gives the largest reachable value.

Usage:
    python benchmarks/replay.py --table benchmarks/data/rte_minilm_low.csv --seeds 10 --jobs 2
    python benchmarks/replay.py --table benchmarks/data/sst2_minilm_low.csv --seeds 10 --jobs 2 \
        --out benchmarks/results/replay_sst2
Results: benchmarks/results/replay/runs.jsonl (one line per run; finished runs are
skipped on a rerun), summary.json, hypervolume.png, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "replay"
#: label -> (sampler name, options): SAAS GP + qLogNEHVI fitted by MAP or by NUTS (256/128/16).
SAMPLERS = {
    "saas-map": ("saasbo", {"fit": "map"}),
    "saas-nuts": ("saasbo", {"fit": "nuts"}),
    # variants: the acquisition's % objective on a linear scale and/or the benchmark's reference point
    "saas-map-lin": ("saasbo", {"fit": "map", "percent_scale": "linear"}),
    "saas-map-ref": ("saasbo", {"fit": "map", "ref_point": "benchmark"}),
    "saas-map-lin-ref": ("saasbo", {"fit": "map", "percent_scale": "linear", "ref_point": "benchmark"}),
    "gp-lin": ("gp", {"percent_scale": "linear"}),
    # the scores below their 20 % quantile raised to it before the GP fit (option score_floor_quantile)
    "saas-map-floor": ("saasbo", {"fit": "map", "score_floor_quantile": 0.2}),
    "gp": ("gp", {}),
    "random": ("random", {}),
    "nsga2": ("nsga2", {}),
    "motpe": ("motpe", {}),
}


def _setup(table_path: Path):
    from autopeft.metrics import majority_baseline
    from autopeft.search.pareto import default_reference_point, space_max_percent
    from autopeft.tasks import load_task
    from autopeft.workflow import describe_model, make_space

    from table import load_table, table_task

    rows = load_table(table_path)
    spec, _ = describe_model("minilm", 2)
    space = make_space(spec)
    task = load_task(table_task(rows))
    majority = majority_baseline(task.spec, task.train.labels, task.dev.labels)["score"]
    ref = default_reference_point(space_max_percent(space, spec), majority)
    return rows, spec, space, ref


def run_one(table_path: str, label: str, seed: int, budget: int, n_init: int) -> dict:
    """One replay: the trial-ordered (score, percent) of `budget` proposals."""
    import torch

    torch.set_num_threads(1)
    import optuna

    from autopeft.search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows, spec, space, ref = _setup(Path(table_path))
    by_key = {r["config"].to_json(): r for r in rows}
    name, options = SAMPLERS[label]
    if options.get("ref_point") == "benchmark":
        options = {**options, "ref_point": ref}
    if name in ("saasbo", "gp"):  # the replay's protocol: one seed per row, so no calibration pairs
        options = {"calibration_pairs": 0, **options}
    sampler = make_sampler(name, space, seed=seed, n_init=n_init, percent_fn=spec.percent,
                           candidates=[r["config"] for r in rows], **options)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    scores, percents, proposal_s = [], [], []
    for _ in range(min(budget, len(rows))):
        trial = study.ask()
        for pname, dist in space.optuna_distributions().items():
            trial.suggest_categorical(pname, dist.choices)
        row = by_key[space.from_params(trial.params).to_json()]
        proposal_s.append(sampler.last_proposal_seconds)
        scores.append(row["score"])
        percents.append(row["percent"])
        study.tell(trial, [row["score"], row["percent"]])
    return {"label": label, "seed": seed, "budget": budget, "table": Path(table_path).name, "scores": scores,
            "percents": percents, "proposal_s": proposal_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=HERE / "data" / "rte_minilm_low.csv")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="25,50,100")
    parser.add_argument("--random-budget", type=int, default=200, help="random search also runs to this budget")
    parser.add_argument("--init", type=int, default=10, help="initial random trials / NSGA-II population / TPE start-up")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--summary-only", action="store_true", help="only summarise the runs already in runs.jsonl")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    labels = args.samplers.split(",")
    unknown = set(labels) - set(SAMPLERS)
    if unknown:
        parser.error(f"unknown sampler label(s) {sorted(unknown)}; choose from {list(SAMPLERS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    runs_path = args.out / "runs.jsonl"
    key = lambda r: (r["label"], r["seed"], r["budget"])  # noqa: E731
    done = read_runs(runs_path, args.table.name, key)
    todo = []
    for label in [] if args.summary_only else labels:
        budget = max(budgets + ([args.random_budget] if label == "random" else []))
        todo += [(label, seed, budget) for seed in range(args.seeds) if (label, seed, budget) not in done]
    run_pending(run_one, [(str(args.table), *t, args.init) for t in todo], args.jobs, runs_path, done, key,
                lambda r: f"{r['label']:<11} seed {r['seed']:>2}: {len(r['scores'])} trials")
    runs = [r for r in done.values() if r["label"] in labels]
    if not runs:
        raise SystemExit(f"no replays of {labels} in {runs_path}; run without --summary-only first")
    summarise(args.table, runs, budgets, args.random_budget, args.out)


def read_runs(runs_path: Path, table_name: str, key) -> dict:
    """The finished runs in `runs_path` (JSON lines) by `key(run)`; refuses a file of another table's replays."""
    done = {}
    if runs_path.exists():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            if r.get("table", table_name) != table_name:  # runs before this field: the one table
                raise SystemExit(f"{runs_path} holds replays of {r['table']}, not {table_name}; "
                                 f"give another --out for this table")
            done[key(r)] = r
    return done


def run_pending(run, arguments: list[tuple], jobs: int, runs_path: Path, done: dict, key, describe) -> None:
    """`run(*args)` for each tuple in `arguments`, `jobs` processes at a time; each result is appended
    to `runs_path` as it comes (a rerun skips it), added to `done` and announced with `describe(result)`."""
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool, runs_path.open("a") as out:
        for fut in [pool.submit(run, *args) for args in arguments]:
            r = fut.result()
            out.write(json.dumps(r) + "\n")
            out.flush()
            done[key(r)] = r
            print(f"{describe(r)} ({time.perf_counter() - start:.0f} s so far)", flush=True)


def first_reaching(curve: np.ndarray, target: float) -> int | None:
    """The first trial (1-based) at which `curve` (shape: trials) reaches `target`; None if never.

    A small tolerance absorbs float differences between sums of the same terms.
    """
    reached = np.flatnonzero(curve >= target - 1e-9)
    return int(reached[0]) + 1 if reached.size else None


def summarise(table_path: Path, runs: list[dict], budgets: list[int], random_budget: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    from autopeft.search.pareto import hypervolume, hypervolume_history

    rows, _, _, ref = _setup(table_path)
    best = hypervolume([r["score"] for r in rows], [r["percent"] for r in rows], *ref)
    labels = list(dict.fromkeys(r["label"] for r in runs))
    curves = {label: np.array([hypervolume_history(r["scores"], r["percents"], *ref)
                               for r in runs if r["label"] == label]) for label in labels}
    summary = {"table": str(table_path), "n_rows": len(rows), "reference_point": ref, "table_hypervolume": best,
               "samplers": {}}
    print(f"\ntable: {len(rows)} configurations, hypervolume of the whole table {best:.3f}, reference point "
          f"(score {ref[0]:.2f}, {ref[1]:.2f}%)\n")
    shown = budgets + ([random_budget] if random_budget not in budgets else [])
    # How efficient a sampler is against random search: the first trial at which random
    # search's mean hypervolume reaches the sampler's mean at 50 trials, and Welch's t-test
    # of the sampler at 50 against random at random_budget (the goal).
    random = curves.get("random")
    goal = random[:, random_budget - 1] if random is not None and random.shape[1] >= random_budget else None
    print("| sampler | seeds | " + " | ".join(f"HV @ {b}" for b in shown)
          + f" | random's trials to match @ 50 | p (@ 50 vs random @ {random_budget}) | trials to reach random @ "
          f"{random_budget} | median proposal s @ 50 | @ 100 |")
    print("|---|---|" + "---|" * (len(shown) + 5))
    for label in labels:
        c = curves[label]
        entry = {"seeds": len(c)}
        cells = []
        for b in shown:
            if c.shape[1] >= b:
                mean, std = float(c[:, b - 1].mean()), float(c[:, b - 1].std(ddof=1)) if len(c) > 1 else 0.0
                entry[str(b)] = {"mean": mean, "std": std}
                cells.append(f"{mean:.3f} ± {std:.3f}")
            else:
                cells.append("–")
        matched, p_value = "–", "–"
        if random is not None and c.shape[1] >= 50:
            entry["random_trials_to_match_at_50"] = first_reaching(random.mean(0), c[:, 49].mean())
            matched = str(entry["random_trials_to_match_at_50"] or f"> {random.shape[1]}")
            if goal is not None and len(c) > 1:
                entry["welch_p_at_50_vs_random_goal"] = float(stats.ttest_ind(c[:, 49], goal, equal_var=False).pvalue)
                p_value = f"{entry['welch_p_at_50_vs_random_goal']:.3f}"
        to_goal = "–"
        if goal is not None:
            entry["trials_to_reach_random_goal"] = first_reaching(c.mean(0), goal.mean())
            to_goal = str(entry["trials_to_reach_random_goal"] or f"> {c.shape[1]}")
        props = []
        for n in (50, 100):  # the proposal made with n - 1 observations
            times = [r["proposal_s"][n - 1] for r in runs if r["label"] == label and len(r["proposal_s"]) >= n]
            entry[f"median_proposal_s_at_{n}"] = float(np.median(times)) if times else None
            props.append(f"{np.median(times):.2f}" if times else "–")
        summary["samplers"][label] = entry
        print(f"| {label} | {len(c)} | " + " | ".join(cells) + f" | {matched} | {p_value} | {to_goal} | {props[0]} | {props[1]} |")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    # Left: the hypervolume itself. Right: its shortfall from the whole table's on a log
    # axis, where the samplers' differences late in the search stay visible.
    fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, label in enumerate(labels):
        c = curves[label]
        x = np.arange(1, c.shape[1] + 1)
        mean, std = c.mean(0), c.std(0)
        ax.plot(x, mean, color=f"C{k}", label=f"{label} ({len(c)} seeds)")
        ax.fill_between(x, mean - std, mean + std, color=f"C{k}", alpha=0.15)
        gap_ax.plot(x, np.maximum(best - mean, 1e-3), color=f"C{k}", label=label)
    ax.axhline(best, color="k", ls=":", lw=1, label="whole table")
    if goal is not None:
        ax.axhline(goal.mean(), color="k", ls="--", lw=1, label=f"random @ {random_budget} (issue 4 goal for SAAS @ 50)")
        gap_ax.axhline(best - goal.mean(), color="k", ls="--", lw=1, label=f"random @ {random_budget}")
    ax.set_xlabel("trials")
    ax.set_ylabel("hypervolume (score × % trainable)")
    ax.set_title(f"Replay on {len(rows)} tabulated {rows[0]['task']} configurations (mean ± std)")
    ax.legend(fontsize=8)
    gap_ax.set_yscale("log")
    gap_ax.set_xlabel("trials")
    gap_ax.set_ylabel("whole table's hypervolume − mean hypervolume (log)")
    gap_ax.set_title("Shortfall from the whole table (lower is better)")
    gap_ax.grid(True, which="both", alpha=0.3)
    gap_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "hypervolume.png", dpi=120)
    print(f"\nwrote {out / 'summary.json'} and {out / 'hypervolume.png'}")


if __name__ == "__main__":
    main()
