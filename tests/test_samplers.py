"""Samplers behind `make_sampler`: validity, no duplicates, pending points, determinism,
errors, and a small synthetic benchmark where SAAS-BO must beat random search."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest

from autopeft.errors import UserError
from autopeft.search.pareto import hypervolume
from autopeft.search.attrs import PROPOSAL_ATTR, SECONDS_ATTR
from autopeft.search.bo.model import floor_low_scores
from autopeft.search.samplers import SAMPLER_NAMES, make_sampler
from autopeft.space import ModelSpec, PeftConfig, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Small space: 4 layers (layer 0 fixed off), 4/3/4 sizes -> 47 x 7 = 329 valid configurations.
SMALL = SearchSpace(4, (0, 4, 8, 16), (0, 4, 8), (0, 2, 4, 8), fixed_layers=(False, None, None, None))
SMALL_SPEC = ModelSpec("bert", 4, 64, 64, 64, 200_000, 64 * 2 + 2)

# Benchmark space with the real structure: 6 layer bits, 5 sizes for SA / PA / PT (d = 9).
BENCH = SearchSpace(6, (0, 8, 16, 32, 64), (0, 8, 16, 32, 64), (0, 4, 8, 16, 32))
BENCH_SPEC = ModelSpec("bert", 6, 128, 128, 128, 1_500_000, 128 * 2 + 2)

# keeps CI fast; no calibration pairs (BOOptions default 2): these tests read the BO proposals (test_noise tests them)
CHEAP = {"n_random_candidates": 256, "max_local_candidates": 256, "calibration_pairs": 0}


def small_score(config: PeftConfig) -> float:
    return 50 + 4 * np.log1p(config.serial_adapter) + 3 * config.layers[3] - 0.1 * config.prefix_length


def bench_score(config: PeftConfig) -> float:
    """Depends on 4 of 9 dimensions: SA size (saturating), PA on, top two layers."""
    sa = BENCH.serial_adapter.index(config.serial_adapter) / 4
    return 60 + 8 * np.sqrt(sa) + 3 * (config.parallel_adapter > 0) + 2 * config.layers[5] + 1.5 * config.layers[4]


def new_study(sampler) -> optuna.Study:
    return optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)


def ask_config(study: optuna.Study, space: SearchSpace) -> tuple[optuna.trial.Trial, PeftConfig]:
    trial = study.ask()
    for name, dist in space.optuna_distributions().items():
        trial.suggest_categorical(name, dist.choices)
    return trial, space.from_params(trial.params)


def run(study, space, spec, score_fn, n_trials, noise=0.0, seed=0) -> list[PeftConfig]:
    rng = np.random.default_rng(seed)
    configs = []
    for _ in range(n_trials):
        trial, config = ask_config(study, space)
        assert space.contains(config), config
        configs.append(config)
        study.tell(trial, [score_fn(config) + noise * rng.normal(), spec.percent(config)])
    return configs


def sampler(name, space=SMALL, spec=SMALL_SPEC, seed=0, n_init=5, **options):
    if name == "saasbo":
        options = {"fit": "map", **CHEAP, **options}
    elif name == "gp":
        options = {**CHEAP, **options}
    return make_sampler(name, space, seed=seed, n_init=n_init, percent_fn=spec.percent, **options)


# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_only_valid_configurations(name):
    s = sampler(name)
    study = new_study(s)
    configs = run(study, SMALL, SMALL_SPEC, small_score, 18, noise=0.2)
    assert all(SMALL.contains(c) for c in configs)
    if name in ("saasbo", "gp", "random"):
        assert len(set(configs)) == len(configs), "proposed a configuration twice"
    assert s.last_proposal_seconds is not None and s.last_proposal_seconds >= 0
    last = study.trials[-1]
    assert last.system_attrs[SECONDS_ATTR] >= 0
    assert SMALL.from_params(last.system_attrs[PROPOSAL_ATTR]) == configs[-1]
    if name in ("saasbo", "gp"):
        assert s.last_proposal["kind"] == "bo"


@pytest.mark.parametrize("name", ["nsga2", "motpe", "random"])
def test_optuna_samplers_repaired_on_a_space_that_is_mostly_invalid(name):
    # One module (SA in {0, 8}) and 2 searched layers: 3 of 8 raw combinations are valid.
    tiny = SearchSpace(3, (0, 8), (0,), (0,), fixed_layers=(None, False, None))
    spec = ModelSpec("bert", 3, 16, 16, 16, 10_000, 34)
    study = new_study(make_sampler(name, tiny, seed=1, n_init=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random sampler warns once the 3 configurations are used up
        configs = run(study, tiny, spec, lambda c: float(sum(c.layers)), 12)
    assert all(tiny.contains(c) for c in configs)
    assert len(set(configs)) == 3  # every valid configuration is reachable


def test_random_sampler_warns_when_space_is_exhausted(caplog, capsys):
    tiny = SearchSpace(1, (0, 8), (0,), (0,))  # one valid configuration
    study = new_study(make_sampler("random", tiny, seed=0))
    run(study, tiny, ModelSpec("bert", 1, 16, 16, 16, 10_000, 34), lambda c: 1.0, 1)
    run(study, tiny, ModelSpec("bert", 1, 16, 16, 16, 10_000, 34), lambda c: 1.0, 1)
    assert "every configuration of the search space has been tried" in caplog.text
    assert capsys.readouterr() == ("", "")  # the library's warning went to its logger, which shows nothing itself


@pytest.mark.parametrize("name", ["saasbo", "gp"])
def test_bo_pending_trials_are_not_reproposed(name):
    study = new_study(sampler(name))
    done = run(study, SMALL, SMALL_SPEC, small_score, 8, noise=0.2)
    # q = 3 by sequential greedy asks: the deterministic acquisition would give the same
    # argmax three times if the RUNNING trials were not passed as pending points.
    batch = [ask_config(study, SMALL) for _ in range(3)]
    configs = [c for _, c in batch]
    assert len(set(configs)) == 3
    assert not set(configs) & set(done)
    assert study.sampler.last_proposal["n_pending"] == 2
    # A trial whose proposal was made but whose parameters are not all suggested yet
    # (another worker mid-ask) is pending too, through its stored proposal.
    half = study.ask()
    first = next(iter(SMALL.optuna_distributions().items()))
    half.suggest_categorical(first[0], first[1].choices)
    proposal = SMALL.from_params(study._storage.get_trial(half._trial_id).system_attrs[PROPOSAL_ATTR])
    _, other = ask_config(study, SMALL)
    assert other != proposal and other not in configs and other not in done


def test_bo_without_percent_fn_models_percent_with_a_second_gp():
    s = make_sampler("saasbo", SMALL, seed=0, n_init=5, fit="map", **CHEAP)
    study = new_study(s)
    configs = run(study, SMALL, SMALL_SPEC, small_score, 8, noise=0.2)
    assert s.last_proposal["kind"] == "bo"
    assert len(set(configs)) == len(configs) and all(SMALL.contains(c) for c in configs)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_same_seed_same_proposals(name):
    runs = []
    for _ in range(2):
        study = new_study(sampler(name, seed=7))
        runs.append(run(study, SMALL, SMALL_SPEC, small_score, 9, noise=0.2, seed=3))
    assert runs[0] == runs[1]
    other = run(new_study(sampler(name, seed=8)), SMALL, SMALL_SPEC, small_score, 9, noise=0.2, seed=3)
    assert other != runs[0]


@pytest.mark.parametrize("scale", ["log", "linear"])
def test_percent_scale_sets_the_second_objective(scale):
    s = sampler("saasbo", percent_scale=scale)
    percents = np.array([0.01, 0.1, 1.0, 10.0])
    expected = -np.log10(percents) if scale == "log" else -percents
    np.testing.assert_allclose(s._percent_objective(percents), expected)
    configs = run(new_study(s), SMALL, SMALL_SPEC, small_score, 7, noise=0.2)
    assert s.last_proposal["kind"] == "bo" and len(set(configs)) == 7
    # the reference point is reported in % whatever the scale: the space's largest configuration
    largest = SMALL_SPEC.percent(PeftConfig(16, 8, 8, 0, layers=(False, True, True, True)))
    assert s.last_proposal["ref_point"][1] == pytest.approx(largest)


def test_score_floor_raises_only_the_low_scores_before_the_fit():
    scores = np.array([50.0, 70.0, 71.0, 72.0, 73.0])
    np.testing.assert_allclose(floor_low_scores(scores, 0.2), [66.0, 70.0, 71.0, 72.0, 73.0])  # 20 % quantile: 66
    np.testing.assert_array_equal(floor_low_scores(scores, 0.0), scores)
    s = sampler("saasbo", score_floor_quantile=0.2)
    study = new_study(s)
    configs = run(study, SMALL, SMALL_SPEC, small_score, 7, noise=0.2)
    assert s.last_proposal["kind"] == "bo" and len(set(configs)) == 7
    floored = floor_low_scores(np.array([t.values[0] for t in study.trials[:6]]), 0.2)  # seen by the 7th proposal
    assert floored.min() > min(t.values[0] for t in study.trials[:6])
    # the default reference point is computed from the floored scores
    assert s.last_proposal["ref_point"][0] == pytest.approx(floored.min() - 0.1 * (floored.max() - floored.min()))


def _memory_maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def test_nuts_saas_proposal_is_valid_and_deterministic():
    """The real fully Bayesian SAAS model (NUTS), with tiny settings for CI; a NUTS fit
    leaves no compiled code behind (without clearing JAX's caches each fit kept ~1000
    memory maps, and a long search crashed at the kernel's limit)."""
    proposals, maps = [], []
    for _ in range(2):
        s = make_sampler("saasbo", SMALL, seed=3, n_init=6, percent_fn=SMALL_SPEC.percent, fit="nuts",
                         warmup_steps=32, num_samples=16, thinning=4, **CHEAP)
        study = new_study(s)
        done = run(study, SMALL, SMALL_SPEC, small_score, 6, noise=0.2, seed=1)
        _, config = ask_config(study, SMALL)
        assert s.last_proposal["kind"] == "bo", s.last_proposal
        assert SMALL.contains(config) and config not in done
        proposals.append(config)
        maps.append(_memory_maps())
    assert proposals[0] == proposals[1]
    assert maps[1] - maps[0] < 300, maps


def test_errors():
    with pytest.raises(UserError, match="saasbo, gp, random, nsga2, motpe"):
        make_sampler("bayes", SMALL)
    with pytest.raises(UserError, match="unknown option"):
        make_sampler("gp", SMALL, warmup_steps=10)
    with pytest.raises(UserError, match="fit"):
        make_sampler("saasbo", SMALL, fit="laplace")
    with pytest.raises(UserError, match="percent_scale must be 'log' or 'linear'"):
        make_sampler("gp", SMALL, percent_scale="sqrt")
    for bad in (1.0, -0.1, "0.2", True):
        with pytest.raises(UserError, match="score_floor_quantile must be a number in"):
            make_sampler("saasbo", SMALL, score_floor_quantile=bad)
    with pytest.raises(UserError, match="nsga2"):
        make_sampler("nsga2", SMALL, not_an_option=1)
    # the reference point is accepted (and ignored) by every sampler, as the driver passes it
    for name in SAMPLER_NAMES:
        make_sampler(name, SMALL, ref_point=(0.0, 5.0))
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=sampler("gp"))
    with pytest.raises(UserError, match="directions"):
        ask_config(study, SMALL)


# --------------------------------------------------------------------------------------
def _hv(configs) -> float:
    worst = 60.0  # lowest possible bench_score
    top = BENCH_SPEC.percent(PeftConfig(64, 64, 32, 0, layers=(True,) * 6))
    return hypervolume([bench_score(c) for c in configs], [BENCH_SPEC.percent(c) for c in configs], worst, top)


def test_saasbo_beats_random_on_a_synthetic_benchmark():
    """Same budget (30 trials, 10 initial), 3 seeds: mean hypervolume of the true
    (noise-free) objectives, SAAS-BO (MAP-SAAS for CI speed) against random search."""
    hv = {"saasbo": [], "random": []}
    for seed in range(3):
        for name in hv:
            study = new_study(sampler(name, space=BENCH, spec=BENCH_SPEC, seed=seed, n_init=10))
            configs = run(study, BENCH, BENCH_SPEC, bench_score, 30, noise=0.3, seed=seed)
            hv[name].append(_hv(configs))
    mean = {k: float(np.mean(v)) for k, v in hv.items()}
    assert mean["saasbo"] > mean["random"], hv


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_candidates_restrict_every_proposal(name):
    rng = np.random.default_rng(3)
    table = list({c.to_json(): c for c in (SMALL.sample(rng) for _ in range(40))}.values())[:25]
    s = sampler(name, candidates=table)
    study = new_study(s)
    configs = run(study, SMALL, SMALL_SPEC, small_score, 20, noise=0.2)
    keys = [c.to_json() for c in configs]
    assert set(keys) <= {c.to_json() for c in table}
    assert len(set(keys)) == len(keys)  # no candidate twice while unseen ones are left


def test_candidates_outside_the_space_are_refused():
    outside = PeftConfig(serial_adapter=5, layers=(False, True, True, True))
    with pytest.raises(UserError, match="not a configuration of the search space"):
        sampler("random", candidates=[outside])
    with pytest.raises(UserError, match="empty"):
        sampler("saasbo", candidates=[])


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_every_sampler_opens_with_the_standard_modules(name):
    """The standard modules are the first trials, in order, whatever the sampler; then its own proposals (the BO
    samplers: n_init random ones before modelling)."""
    assert SMALL.standard_modules(SMALL_SPEC.hidden_size) == {}  # layer 0 is fixed off: none is in all layers
    space = SearchSpace(4, (0, 4, 8, 16), (0, 4, 8), (0, 2, 4, 8))
    standards = list(space.standard_modules(SMALL_SPEC.hidden_size).values())
    assert len(standards) == 3
    s = make_sampler(name, space, seed=0, n_init=2, percent_fn=SMALL_SPEC.percent, standards=standards,
                     **({"fit": "map", **CHEAP} if name == "saasbo" else CHEAP if name == "gp" else {}))
    study = new_study(s)
    configs = run(study, space, SMALL_SPEC, small_score, 8, noise=0.2)
    assert configs[:3] == standards
    assert not set(configs[3:]) & set(standards)
    if name in ("saasbo", "gp"):
        kinds = [t.system_attrs.get(PROPOSAL_ATTR) is not None for t in study.trials]
        assert all(kinds) and s.last_proposal["kind"] in ("bo", "replicate (noise calibration)")
    with pytest.raises(UserError, match="standards: SA32 @ layers 0,1,2,3 is not a configuration"):
        make_sampler(name, space, standards=[PeftConfig(serial_adapter=32, layers=(1, 1, 1, 1))])


def test_nuts_without_jax_says_how_to_install_it(monkeypatch):
    import autopeft.search.samplers.options as options

    monkeypatch.setattr(options, "_installed", lambda module: module != "numpyro")
    with pytest.raises(UserError, match=r"pip install 'autopeft\[nuts\]'"):
        make_sampler("saasbo", SMALL, fit="nuts")
    make_sampler("saasbo", SMALL, fit="map")  # the default fit needs neither


def test_a_registered_toy_sampler_runs_a_search_end_to_end(tiny_model_dir, tmp_path, monkeypatch):
    """README, "Adding a sampler": tests/toy_sampler.py and one registry line are the whole addition."""
    import autopeft
    from autopeft.cli import main
    from autopeft.search.samplers import SAMPLERS
    from toy_sampler import hill_climb

    monkeypatch.setitem(SAMPLERS, "hill-climb", hill_climb)  # the one registry line (undone after the test)
    out = tmp_path / "s"
    search = autopeft.create_search(str(tiny_model_dir), "RTE", out, sampler="hill-climb", train_examples=16,
                                    dev_examples=16, epochs=1, max_length=32).optimize(budget=6)
    trials = sorted(search.trials(), key=lambda t: t["number"])
    attrs = search.study.user_attrs
    space = SearchSpace.from_dict(attrs["space"], attrs["model_spec"]["hidden_size"], attrs["model_spec"]["n_layers"])
    grid = space.grid()
    assert sorted(t["standard"] for t in trials[:4]) == sorted(attrs["standards"])  # the standard modules first
    for k, trial in enumerate(trials[4:], start=4):  # then each proposal is a neighbour of the best so far
        best = max(trials[:k], key=lambda t: t["score"])
        neighbours = {grid.config(r) for r in grid.neighbours(grid.index(PeftConfig.from_dict(best["config"])))}
        assert PeftConfig.from_dict(trial["config"]) in neighbours
    # the CLI knows it too, and a resume keeps it
    assert main(["search", "--model", str(tiny_model_dir), "--task", "RTE", "--sampler", "hill-climb", "--budget",
                 "7", "--out", str(out), "--quiet", "--train-examples", "16", "--dev-examples", "16", "--epochs", "1",
                 "--max-length", "32"]) == 0
    assert len(autopeft.load_search(out).trials()) == 7 and search.study.user_attrs["sampler"] == "hill-climb"
    with pytest.raises(UserError, match="unknown option"):
        make_sampler("hill-climb", space, warmup_steps=3)
