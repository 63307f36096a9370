"""Seed noise: the estimator, replicate trials in BO searches, and the front of configuration means."""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autopeft.search.noise import estimate_noise
from autopeft.search.attrs import PROPOSAL_ATTR, REPLICATE_ATTR
from autopeft.search.samplers import base as sampler_base
from autopeft.search.samplers import make_sampler
from autopeft.search.results import completed_trials, config_rows, front_rows, noise_estimate, replicate_index
from autopeft.search.runner import TrialResult, run_search
from autopeft.search.storage import open_study
from autopeft.space import PeftConfig
from conftest import SMALL_SPACE, SMALL_SPEC, study_metadata

optuna.logging.set_verbosity(optuna.logging.WARNING)
CHEAP = {"n_random_candidates": 128, "max_local_candidates": 128, "climb_rounds": 1}


def true_score(config: PeftConfig) -> float:
    return 50 + 3 * np.log1p(config.serial_adapter) + 2 * config.parallel_adapter / 8 + 1.5 * sum(config.layers)


class NoisyEvaluator:
    """Score = a configuration effect + seed noise (SD `sd`) drawn from (configuration, training seed)."""

    def __init__(self, sd: float = 1.0):
        self.sd = sd
        self.calls: list[tuple[str, int]] = []

    def __call__(self, config: PeftConfig, trial: optuna.trial.Trial) -> TrialResult:
        seed = replicate_index(trial)
        trial.set_user_attr("train_seed", seed)
        self.calls.append((config.to_json(), seed))
        rng = np.random.default_rng([zlib.crc32(config.to_json().encode()), seed])
        score = true_score(config) + self.sd * rng.normal()
        return TrialResult(score=float(score), percent=SMALL_SPEC.percent(config), metrics={"accuracy": float(score)})


def bo_study(path: Path, seed: int = 0, replicates: float = 0.2, name: str = "gp", calibration_pairs: int = 2,
             **options) -> optuna.Study:
    options = {**CHEAP, "calibration_pairs": calibration_pairs, **({"fit": "map"} if name == "saasbo" else {}), **options}
    sampler = make_sampler(name, SMALL_SPACE, seed=seed, n_init=4, percent_fn=SMALL_SPEC.percent,
                           replicates=replicates, **options)
    return open_study(None, "s", path, study_metadata(sampler=name), sampler)


def cheapest(study: optuna.Study, k: int) -> list[int]:
    """Numbers of the k initial-design trials (0-3) with the smallest % parameters."""
    return sorted(range(4), key=lambda n: (study.trials[n].values[1], n))[:k]


def evaluated(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]


def check_replicates(study: optuna.Study, budget: int, fraction: float) -> list[optuna.trial.FrozenTrial]:
    """Budget exact, no work done twice, replicates marked and pointing at the first evaluation; returns them."""
    done = evaluated(study)
    assert len(done) == budget
    work = Counter((json.dumps(t.user_attrs["config"], sort_keys=True), replicate_index(t)) for t in done)
    assert max(work.values()) == 1, "a configuration was trained twice with the same seed"
    by_number = {t.number: t for t in study.trials}
    replicas = [t for t in done if "replicate_of" in t.user_attrs]
    for t in replicas:
        first = by_number[t.user_attrs["replicate_of"]]
        assert first.user_attrs["config"] == t.user_attrs["config"] and replicate_index(first) == 0
        assert t.user_attrs["replicate_index"] >= 1 and t.user_attrs["train_seed"] == t.user_attrs["replicate_index"]
    assert all(replicate_index(t) == 0 for t in done if "replicate_of" not in t.user_attrs)
    assert 2 <= len(replicas) <= max(2, fraction * budget)
    return replicas


# --- the estimator ----------------------------------------------------------------------------


def test_noise_estimate_recovers_a_known_seed_sd():
    rng = np.random.default_rng(0)
    effects = 5.0 * rng.normal(size=80)  # configuration SD 5, seed SD 2: share 25 / 29
    groups = [list(e + 2.0 * rng.normal(size=3)) for e in effects]
    noise = estimate_noise(groups)
    assert noise.pairs == 160
    assert noise.seed_sd == pytest.approx(2.0, rel=0.2)
    assert noise.config_share == pytest.approx(25 / 29, abs=0.1)
    # pure noise: no configuration effect
    pure = estimate_noise([list(2.0 * rng.normal(size=2)) for _ in range(80)])
    assert pure.seed_sd == pytest.approx(2.0, rel=0.2) and pure.config_share < 0.3 and pure.too_noisy


def test_noise_estimate_needs_a_pair_and_two_configurations():
    assert estimate_noise([[1.0], [2.0]]).to_dict() == {"seed_sd": None, "config_share": None, "pairs": 0}
    one = estimate_noise([[1.0, 3.0]])
    assert one.seed_sd == pytest.approx(np.sqrt(2.0)) and one.config_share is None and one.pairs == 1
    exact = estimate_noise([[1.0, 1.0], [5.0]])
    assert exact.seed_sd == 0 and exact.config_share == 1.0 and not exact.too_noisy


# --- replicates in a search -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gp", "saasbo"])
def test_bo_search_spends_part_of_the_budget_on_replicates(tmp_path, name):
    study = bo_study(tmp_path, name=name)
    ev = NoisyEvaluator(sd=1.0)
    run_search(study, SMALL_SPACE, ev, budget=15, progress=False)
    replicas = check_replicates(study, 15, 0.2)
    assert len(ev.calls) == 15 and len(set(ev.calls)) == 15
    # the first two replicates are the noise calibration, right after the initial design: its two
    # configurations with the smallest % parameters
    numbers = sorted(t.number for t in replicas)
    assert numbers[:2] == [4, 5]
    assert [t.user_attrs["replicate_of"] for t in sorted(replicas, key=lambda t: t.number)[:2]] == cheapest(study, 2)
    noise = noise_estimate(study)
    assert noise.pairs == len(replicas) and noise.seed_sd > 0


def test_replicates_zero_leaves_only_the_calibration_pairs(tmp_path):
    study = bo_study(tmp_path, replicates=0.0)
    run_search(study, SMALL_SPACE, NoisyEvaluator(), budget=10, progress=False)
    replicas = check_replicates(study, 10, 0.0)
    assert sorted(t.number for t in replicas) == [4, 5]
    assert sorted(t.user_attrs["replicate_of"] for t in replicas) == cheapest(study, 2)
    assert noise_estimate(study).pairs == 2


def test_no_calibration_pairs_and_no_replicates_turns_them_off(tmp_path):
    study = bo_study(tmp_path, replicates=0.0, calibration_pairs=0)
    run_search(study, SMALL_SPACE, NoisyEvaluator(), budget=10, progress=False)
    assert not any("replicate_of" in t.user_attrs for t in study.trials)
    assert noise_estimate(study).pairs == 0


def test_concurrent_askers_take_the_last_replicate_once(tmp_path):
    """Two workers asking at once: the later trial's proposal waits for the earlier one's, so
    one calibration pair is one replicate, not one per worker."""
    study = bo_study(tmp_path, replicates=0.0, calibration_pairs=1)
    run_search(study, SMALL_SPACE, NoisyEvaluator(), budget=4, progress=False)
    study.set_user_attr("budget", 10)
    # another worker's trial: created, its proposal still being made
    earlier = study._storage.get_trial(study._storage.create_new_trial(study._study_id))

    def propose_late() -> None:
        time.sleep(0.5)
        other = bo_study(tmp_path, seed=5, replicates=0.0, calibration_pairs=1)
        other.sampler.sample_relative(other, earlier, other.sampler.infer_relative_search_space(other, earlier))

    thread = threading.Thread(target=propose_late)
    thread.start()
    start = time.perf_counter()
    later = study.ask(SMALL_SPACE.optuna_distributions())  # proposes
    waited = time.perf_counter() - start
    thread.join()
    assert later.number == earlier.number + 1 and waited >= 0.5
    assert REPLICATE_ATTR in study.trials[earlier.number].system_attrs
    assert REPLICATE_ATTR not in study.trials[later.number].system_attrs


def test_a_proposal_waits_only_so_long_for_a_dead_worker(tmp_path, monkeypatch):
    monkeypatch.setattr(sampler_base, "PROPOSAL_WAIT_S", 0.5)
    study = bo_study(tmp_path)
    study._storage.create_new_trial(study._study_id)  # its worker died while proposing
    start = time.perf_counter()
    trial = study.ask(SMALL_SPACE.optuna_distributions())
    assert 0.4 <= time.perf_counter() - start < 5
    assert PROPOSAL_ATTR in study.trials[trial.number].system_attrs


def test_replicates_survive_resume(tmp_path):
    run_search(bo_study(tmp_path), SMALL_SPACE, NoisyEvaluator(), budget=8, progress=False)
    ev = NoisyEvaluator()
    study = run_search(bo_study(tmp_path, seed=1), SMALL_SPACE, ev, budget=20, progress=False)
    assert len(ev.calls) == 12
    check_replicates(study, 20, 0.2)


def test_an_interrupted_replicate_is_run_again_as_a_replicate(tmp_path):
    study = bo_study(tmp_path)
    run_search(study, SMALL_SPACE, NoisyEvaluator(), budget=4, progress=False)
    # A crashed run of budget 10 left a replicate proposal RUNNING (asked, suggested, never told).
    study.set_user_attr("budget", 10)
    crashed = study.ask()
    for pname, dist in SMALL_SPACE.optuna_distributions().items():
        crashed.suggest_categorical(pname, dist.choices)
    assert REPLICATE_ATTR in study.trials[crashed.number].system_attrs  # a calibration pair
    first = study.trials[cheapest(study, 1)[0]]
    assert SMALL_SPACE.from_params(crashed.params).to_dict() == first.user_attrs["config"]

    ev = NoisyEvaluator()
    study = run_search(bo_study(tmp_path, seed=3), SMALL_SPACE, ev, budget=10, progress=False)
    assert study.trials[crashed.number].state == TrialState.FAIL
    rerun = [t for t in evaluated(study) if t.user_attrs.get("rerun_of") == crashed.number]
    assert len(rerun) == 1 and rerun[0].user_attrs["replicate_of"] == first.number and rerun[0].user_attrs["train_seed"] == 1
    assert ev.calls[0] == (PeftConfig.from_dict(first.user_attrs["config"]).to_json(), 1)
    check_replicates(study, 10, 0.2)


# --- the front of means -----------------------------------------------------------------------


def test_front_rows_are_configuration_means(tmp_path):
    study = bo_study(tmp_path)
    run_search(study, SMALL_SPACE, NoisyEvaluator(sd=2.0), budget=15, progress=False)
    trials = completed_trials(study)
    rows = config_rows(study)
    assert sum(r["n_seeds"] for r in rows) == len(trials) == 15
    for row in rows:
        mine = [t for t in trials if t["config"] == row["config"]]
        scores = [t["score"] for t in sorted(mine, key=lambda t: t["replicate_index"])]
        assert row["scores"] == scores and row["n_seeds"] == len(scores)
        assert row["score"] == pytest.approx(np.mean(scores))
        assert row["score_std"] == pytest.approx(np.std(scores, ddof=1) if len(scores) > 1 else 0.0)
        assert row["numbers"] == [t["number"] for t in sorted(mine, key=lambda t: t["replicate_index"])]
        assert row["metrics"]["accuracy"] == pytest.approx(np.mean(scores))
    assert any(r["n_seeds"] > 1 for r in rows)
    front = front_rows(study)
    means = {json.dumps(r["config"], sort_keys=True): r["score"] for r in rows}
    for r in front:  # no configuration mean dominates a front member
        assert not any(o["score"] >= r["score"] and o["percent"] <= r["percent"]
                       and (o["score"], o["percent"]) != (r["score"], r["percent"]) for o in rows)
        assert means[json.dumps(r["config"], sort_keys=True)] == r["score"]
