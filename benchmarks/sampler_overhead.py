"""Time one proposal of the BO samplers at 25/50/100 synthetic observations.

Space: the paper's space for a MiniLM-sized model (`SearchSpace.default(384, 6)`:
10 sizes for each of SA, PA, PT and 6 layer bits, d = 9). The observations are random
valid configurations with a synthetic score; the % parameters objective is the
analytic `ModelSpec.percent` of all-MiniLM-L6-v2 (passed as `percent_fn`, as the study
driver does). Each repeat asks one trial and fails it, so every repeat sees the same
observations and no pending point; the time is the sampler's own
`last_proposal_seconds` (model fit + acquisition optimisation).

    python benchmarks/sampler_overhead.py [--repeats 3] [--sizes 25,50,100]
        [--variants "saasbo (NUTS defaults)" "saasbo fit=map" gp] [--nuts 512,256,16]

Prints min / median over repeats, with the median fit and acquisition seconds. The
first BO proposal of a process also pays one-off costs (importing BoTorch, JAX set-up,
and once per environment the compilation of BoTorch's fused qLogNEHVI kernel); they
are excluded by one untimed warm-up proposal per variant.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import optuna

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "src"))

from autopeft.search.samplers import NUTS_DEFAULTS, make_sampler  # noqa: E402
from autopeft.space import ModelSpec, SearchSpace  # noqa: E402

# all-MiniLM-L6-v2 with a 2-class head (pooler + classifier are trained with the modules).
MINILM = ModelSpec("bert", 6, 384, 384, 384, 22_713_216, 384 * 384 + 384 + 384 * 2 + 2)


def synthetic_score(space: SearchSpace, config) -> float:
    """A score that depends on a few dimensions: SA size, PA on/off, the top two layers."""
    sa = space.serial_adapter.index(config.serial_adapter) / (len(space.serial_adapter) - 1)
    return 60.0 + 8.0 * np.sqrt(sa) + 3.0 * (config.parallel_adapter > 0) + 2.0 * config.layers[-1] + 1.5 * config.layers[-2]


def build_study(space: SearchSpace, n: int, sampler, seed: int) -> optuna.Study:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = space.optuna_distributions()
    seen = set()
    while len(seen) < n:
        config = space.sample(rng)
        if config in seen:
            continue
        seen.add(config)
        score = synthetic_score(space, config) + rng.normal(0, 0.5)
        study.add_trial(optuna.trial.create_trial(
            params=space.to_params(config), distributions=dists, values=[score, MINILM.percent(config)]))
    return study


def time_proposals(study: optuna.Study, space: SearchSpace, repeats: int) -> list[dict]:
    dists = space.optuna_distributions()
    out = []
    for _ in range(repeats):
        trial = study.ask()
        for name, dist in dists.items():
            trial.suggest_categorical(name, dist.choices)
        assert space.contains(space.from_params(trial.params))
        out.append(dict(study.sampler.last_proposal))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="25,50,100")
    parser.add_argument("--variants", nargs="+", default=["saasbo (NUTS defaults)", "saasbo fit=map", "gp"])
    parser.add_argument("--nuts", default=None, help="warmup,samples,thinning for the NUTS variant")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    space = SearchSpace.default(384, 6)
    sizes = [int(s) for s in args.sizes.split(",")]
    nuts = dict(NUTS_DEFAULTS)
    if args.nuts:
        nuts.update(zip(("warmup_steps", "num_samples", "thinning"), (int(v) for v in args.nuts.split(","))))

    def options(variant: str) -> tuple[str, dict]:
        if variant.startswith("saasbo") and "map" in variant:
            return "saasbo", {"fit": "map"}
        if variant.startswith("saasbo"):
            return "saasbo", {"fit": "nuts", **{k: nuts[k] for k in ("warmup_steps", "num_samples", "thinning")}}
        return variant, {}

    print(f"# sampler proposal time, SearchSpace.default(384, 6) (d={space.dim}), "
          f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.1f}")
    print(f"# NUTS: warmup {nuts['warmup_steps']}, samples {nuts['num_samples']}, thinning {nuts['thinning']} "
          f"({nuts['num_samples'] // nuts['thinning']} MCMC samples); {args.repeats} repeats")
    print(f"{'variant':<26} {'n':>4} {'min s':>7} {'median s':>9} {'fit s':>7} {'acq s':>7} {'cands':>6}")
    for variant in args.variants:
        name, opts = options(variant)
        warm = True
        for n in sizes:
            sampler = make_sampler(name, space, seed=0, n_init=5, percent_fn=MINILM.percent,
                                   **({"calibration_pairs": 0} if name in ("saasbo", "gp") else {}), **opts)
            study = build_study(space, n, sampler, seed=n)
            if warm:  # one-off import / JIT / kernel-compilation costs
                t0 = time.perf_counter()
                time_proposals(study, space, 1)
                print(f"# {variant}: warm-up proposal {time.perf_counter() - t0:.1f} s (not counted)")
                warm = False
            runs = time_proposals(study, space, args.repeats)
            secs = [r["seconds"] for r in runs]
            assert all(r.get("kind") == "bo" for r in runs), runs
            print(f"{variant:<26} {n:>4} {min(secs):>7.2f} {statistics.median(secs):>9.2f} "
                  f"{statistics.median(r['fit_seconds'] for r in runs):>7.2f} "
                  f"{statistics.median(r['acq_seconds'] for r in runs):>7.2f} "
                  f"{int(statistics.median(r['n_evaluated'] for r in runs)):>6}", flush=True)


if __name__ == "__main__":
    main()
