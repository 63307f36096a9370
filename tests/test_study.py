"""Study storage, the search loop, Pareto front and hypervolume (no model training)."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from autopeft.errors import UserError, check_interrupt, interrupts_recorded
from autopeft.search.pareto import (
    default_reference_point,
    hypervolume,
    hypervolume_history,
    pareto_mask,
    space_max_percent,
)
from autopeft.search.results import completed_trials, front_rows
from autopeft.search.runner import TrialResult, run_search
from autopeft.search.storage import open_study
from autopeft.space import PeftConfig, SearchSpace
from conftest import SMALL_SPACE, SMALL_SPEC, study_metadata

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE, SPEC = SMALL_SPACE, SMALL_SPEC
metadata = study_metadata


class Evaluator:
    """Cheap synthetic objective that records every configuration it sees."""

    def __init__(self, fail_on: int | None = None):
        self.seen: list[PeftConfig] = []
        self.fail_on = fail_on

    def __call__(self, config: PeftConfig, trial: optuna.trial.Trial) -> TrialResult:
        self.seen.append(config)
        if self.fail_on is not None and len(self.seen) == self.fail_on:
            raise RuntimeError("synthetic failure")
        percent = SPEC.percent(config)
        score = 50 + 10 * np.log1p(percent) + 0.5 * len(config.active_layers)
        return TrialResult(
            score=float(score), percent=percent, metrics={"accuracy": float(score)},
            wall_time_s=0.01, trainable_params=SPEC.trainable_params(config), extra={"note": np.float32(1.0)},
        )


def make(tmp_path: Path, storage: str | None = None, sampler_seed: int = 0, heartbeat: int | None = None,
         **meta) -> optuna.Study:
    return open_study(storage, "s1", tmp_path, metadata(**meta), optuna.samplers.RandomSampler(seed=sampler_seed),
                      heartbeat=heartbeat)


@pytest.fixture
def short_waits(monkeypatch):
    """A waiting search polls every 0.1 s and fails (instead of hanging) after 60 s."""
    import autopeft.search.runner as runner

    monkeypatch.setattr(runner, "WAIT_POLL_S", 0.1)
    recover, start = runner.recover_stale, time.monotonic()

    def recover_or_give_up(*args, **kwargs):
        assert time.monotonic() - start < 60, "the search waited over 60 s for trials of other workers"
        return recover(*args, **kwargs)

    monkeypatch.setattr(runner, "recover_stale", recover_or_give_up)


def n_state(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(states=(state,)))


# --- pareto -----------------------------------------------------------------------------


def brute_force_mask(s: np.ndarray, p: np.ndarray) -> np.ndarray:
    n = len(s)
    return np.array([
        not any((s[j] >= s[i]) and (p[j] <= p[i]) and ((s[j] > s[i]) or (p[j] < p[i])) for j in range(n))
        for i in range(n)
    ])


@pytest.mark.parametrize("seed", range(5))
def test_pareto_mask_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    # Rounded values give plenty of ties in score, percent and both.
    s = rng.integers(0, 8, size=60).astype(float)
    p = rng.integers(0, 8, size=60).astype(float)
    np.testing.assert_array_equal(pareto_mask(s, p), brute_force_mask(s, p))


def test_pareto_mask_edge_cases():
    assert pareto_mask([], []).tolist() == []
    assert pareto_mask([1, 1], [2, 2]).tolist() == [True, True]  # identical points both kept
    assert pareto_mask([1, np.nan, 2], [1, 0, 2]).tolist() == [True, False, True]


def test_hypervolume_hand_examples():
    assert hypervolume([80], [1], 0, 10) == pytest.approx(80 * 9)
    # Two non-dominated points: (80, 1) and (90, 5) against ref (0, 10).
    assert hypervolume([80, 90], [1, 5], 0, 10) == pytest.approx(80 * 9 + 10 * 5)
    # A dominated point and a duplicate add nothing.
    assert hypervolume([80, 90, 70, 90], [1, 5, 6, 5], 0, 10) == pytest.approx(80 * 9 + 10 * 5)
    # Points worse than the reference contribute nothing.
    assert hypervolume([-5, 50], [1, 12], 0, 10) == 0.0
    assert hypervolume([], [], 0, 10) == 0.0
    # (70, 6) is dominated by (80, 1); (90, 5) adds a 10 x 5 slab.
    hist = hypervolume_history([80, 70, 90], [1, 6, 5], 50, 10)
    np.testing.assert_allclose(hist, [30 * 9, 30 * 9, 30 * 9 + 10 * 5])
    # (60, 0.5) is cheaper than everything: it adds a 10 x 0.5 strip on the left.
    assert hypervolume([80, 90, 60], [1, 5, 0.5], 50, 10) == pytest.approx(320 + 10 * 0.5)


def test_reference_point_rule():
    assert default_reference_point(3.5) == (0.0, 3.5)
    assert default_reference_point(3.5, baseline_score=52.7) == (52.7, 3.5)
    top = PeftConfig(16, 8, 4, layers=(1, 1, 1, 1))
    assert space_max_percent(SPACE, SPEC) == pytest.approx(SPEC.percent(top))
    with pytest.raises(ValueError):
        default_reference_point(0.0)


# --- study storage ------------------------------------------------------------------------


def test_metadata_stored_and_mismatch_refused(tmp_path):
    study = make(tmp_path)
    run_search(study, SPACE, Evaluator(), budget=3, progress=False)
    assert (tmp_path / "study.db").is_file()
    assert study.user_attrs["task"] == "RTE"
    before = (dict(study.user_attrs), len(study.trials))

    with pytest.raises(UserError) as err:
        make(tmp_path, task="MRPC", fidelity={"train_fraction": 0.5, "epochs": 1})
    msg = str(err.value)
    assert "task" in msg and "fidelity" in msg and "MRPC" in msg and "RTE" in msg and "--study" in msg

    again = make(tmp_path)  # same metadata: loads
    assert (dict(again.user_attrs), len(again.trials)) == before


def test_resume_changes_sampler_and_seed_only(tmp_path):
    make(tmp_path)
    study = make(tmp_path, sampler="nsga2", seed=3)
    assert study.user_attrs["sampler"] == "nsga2" and study.user_attrs["seed"] == 3


@pytest.mark.parametrize("kind", ["sqlite-url", "journal-suffix", "journal-prefix"])
def test_storage_kinds(tmp_path, kind):
    storage = {
        "sqlite-url": f"sqlite:///{tmp_path / 'other.db'}",
        "journal-suffix": str(tmp_path / "j" / "study.log"),
        "journal-prefix": f"journal:{tmp_path / 'study.jnl'}",
    }[kind]
    study = make(tmp_path, storage=storage)
    run_search(study, SPACE, Evaluator(), budget=2, progress=False)
    reopened = make(tmp_path, storage=storage)
    assert len(completed_trials(reopened)) == 2
    assert reopened.user_attrs["task"] == "RTE"
    assert not (tmp_path / "study.db").exists()


def test_bad_storage_and_out_dir(tmp_path):
    with pytest.raises(UserError, match="not understood"):
        make(tmp_path, storage="redis://localhost")
    with pytest.raises(UserError, match="cannot open"):
        make(tmp_path, storage=f"sqlite:///{tmp_path / 'missing' / 'x' / 'a.db'}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="out_dir .* cannot be created"):
        make(blocker / "out")


def test_a_sqlite_file_in_a_missing_folder_names_the_folder(tmp_path, monkeypatch):
    from autopeft.search.storage import make_storage

    missing = tmp_path / "no" / "such"
    with pytest.raises(UserError, match=f"the folder {missing} does not exist; create it") as err:
        make_storage(f"sqlite:///{missing / 'x.db'}", tmp_path)
    assert "sqlalche.me" not in str(err.value)
    monkeypatch.chdir(tmp_path)  # sqlite:/// and a relative path: the folder under the current one
    with pytest.raises(UserError, match=rf"the folder {missing} \(sqlite:/// and a relative path; sqlite:////"):
        make_storage("sqlite:///no/such/x.db", tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=f"the folder {tmp_path / 'file'} is not a folder"):
        make_storage(f"sqlite:///{tmp_path / 'file' / 'x.db'}", tmp_path)
    (tmp_path / "no").mkdir()
    assert make_storage(f"sqlite:///{tmp_path / 'no' / 'x.db'}", tmp_path, heartbeat=0) is not None


# --- search loop --------------------------------------------------------------------------


def configs_of(study: optuna.Study) -> list[str]:
    return [json.dumps(r["config"], sort_keys=True) for r in completed_trials(study)]


def test_run_records_results(tmp_path):
    study = make(tmp_path)
    seen_end = []
    run_search(study, SPACE, Evaluator(), budget=4, batch=2, progress=False,
               on_trial_end=lambda s, t: seen_end.append(t.number))
    rows = completed_trials(study)
    assert len(rows) == 4 and seen_end
    row = rows[0]
    config = PeftConfig.from_dict(row["config"])
    assert SPACE.contains(config)
    assert row["percent"] == pytest.approx(SPEC.percent(config))
    assert row["trainable_params"] == SPEC.trainable_params(config)
    assert row["metrics"]["accuracy"] == pytest.approx(row["score"])
    assert row["seed"] == 0 and row["proposal_seconds"] >= 0 and row["extra"] == {"note": 1.0}
    front = front_rows(study)
    assert front and [r["percent"] for r in front] == sorted(r["percent"] for r in front)


def test_resume_does_not_repeat_finished_trials(tmp_path):
    ev = Evaluator()
    run_search(make(tmp_path), SPACE, ev, budget=5, progress=False)
    assert len(ev.seen) == 5
    ev2 = Evaluator()
    study = run_search(make(tmp_path, sampler_seed=1), SPACE, ev2, budget=8, progress=False)
    assert len(ev2.seen) == 3
    keys = configs_of(study)
    assert len(keys) == 8 and len(set(keys)) == 8
    assert len({c.to_json() for c in ev.seen + ev2.seen}) == 8
    run_search(study, SPACE, ev2, budget=8, progress=False)  # budget reached: nothing to do
    assert len(ev2.seen) == 3


def test_stale_running_trial_is_rerun_first(tmp_path):
    study = make(tmp_path)
    run_search(study, SPACE, Evaluator(), budget=2, progress=False)
    # Simulate a crash: a trial asked and suggested but never told.
    crashed = study.ask()
    for name, dist in SPACE.optuna_distributions().items():
        crashed.suggest_categorical(name, dist.choices)
    stale_config = SPACE.from_params(crashed.params)
    del study

    ev = Evaluator()
    study = run_search(make(tmp_path, sampler_seed=7), SPACE, ev, budget=4, progress=False)
    stale = study.trials[crashed.number]
    assert stale.state == TrialState.FAIL
    assert stale.user_attrs["fail_reason"] == "stale: interrupted run"
    if stale_config.to_json() not in {PeftConfig.from_dict(r["config"]).to_json() for r in completed_trials(study)[:2]}:
        assert ev.seen[0] == stale_config
    assert len(completed_trials(study)) == 4
    assert n_state(study, TrialState.RUNNING) == 0


def test_running_trial_of_a_live_worker_is_left_alone(tmp_path, short_waits):
    import socket
    import subprocess
    import threading

    dead = subprocess.Popen(["true"])
    dead.wait()
    study = make(tmp_path)
    trials = {}
    for who, pid in (("live", os.getppid()), ("dead", dead.pid)):
        trial = study.ask()
        trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": pid})
        for name, dist in SPACE.optuna_distributions().items():
            trial.suggest_categorical(name, dist.choices)
        trials[who] = trial.number
    dead_config = SPACE.from_params(study.trials[trials["dead"]].params)
    # The live worker's trial counts against the budget: the search runs one trial (the
    # dead worker's configuration, re-queued), then waits until the live one finishes.
    ev = Evaluator()
    finisher = threading.Timer(1.5, lambda: study.tell(trials["live"], [60.0, 1.0]))
    finisher.start()
    run_search(make(tmp_path), SPACE, ev, budget=2, progress=False)
    finisher.join()
    states = {who: study.trials[n].state for who, n in trials.items()}
    assert states == {"live": TrialState.COMPLETE, "dead": TrialState.FAIL}  # the live one was not failed
    assert ev.seen == [dead_config]
    assert any(k.startswith("worker:") for k in study.user_attrs)


def test_failure_is_recorded_and_search_continues(tmp_path):
    ev = Evaluator(fail_on=2)
    study = run_search(make(tmp_path), SPACE, ev, budget=4, progress=False)
    # (RandomSampler may also propose invalid configurations, told FAIL without evaluating.)
    failed = [t for t in study.get_trials(states=(TrialState.FAIL,)) if "invalid" not in t.user_attrs["fail_reason"]]
    assert len(failed) == 1
    assert failed[0].user_attrs["fail_reason"] == "RuntimeError: synthetic failure"
    assert "Traceback" in failed[0].user_attrs["fail_traceback"]
    assert len(completed_trials(study)) == 4 and len(ev.seen) == 5


def test_always_failing_evaluate_stops(tmp_path):
    def broken(config, trial):
        raise ValueError("bad model path")

    with pytest.raises(UserError, match="bad model path"):
        run_search(make(tmp_path), SPACE, broken, budget=3, progress=False)


def test_keyboard_interrupt_marks_fail_and_requeues(tmp_path, caplog):
    calls = []

    def interrupt(config, trial):
        calls.append(config)
        raise KeyboardInterrupt

    study = make(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_search(study, SPACE, interrupt, budget=3, progress=False)
    failed = [t for t in study.get_trials(states=(TrialState.FAIL,)) if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(failed) == 1
    assert "resume" in caplog.text
    ev = Evaluator()
    run_search(make(tmp_path), SPACE, ev, budget=1, progress=False)
    assert ev.seen == calls  # the interrupted configuration runs first


def test_a_ctrl_c_python_swallows_still_stops_the_search(tmp_path, caplog, monkeypatch):
    """A KeyboardInterrupt raised in a __del__ or weakref callback is only printed ("Exception
    ignored in ..."); the recorded Ctrl-C must still stop the search after that trial."""

    class SigintOnDelete:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)  # the handler raises here, and Python drops it

    ev = Evaluator()

    def evaluate(config, trial):
        if len(ev.seen) == 1:
            SigintOnDelete()  # deleted at once: the Ctrl-C lands inside __del__
        return ev(config, trial)

    swallowed = []  # what Python would print as "Exception ignored in ..."
    monkeypatch.setattr(sys, "unraisablehook", lambda u: swallowed.append(u.exc_type))
    # A shell's background job starts with SIGINT ignored (which interrupts_recorded keeps): start from the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    study = make(tmp_path)
    with interrupts_recorded(), pytest.raises(KeyboardInterrupt):
        run_search(study, SPACE, evaluate, budget=5, progress=False)
    assert swallowed == [KeyboardInterrupt]
    assert "resume" in caplog.text
    assert len(ev.seen) == 2 and len(completed_trials(study)) == 2
    assert n_state(study, TrialState.RUNNING) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with interrupts_recorded():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            check_interrupt()  # nothing recorded: no KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("batch", [1, 2])
def test_keyboard_interrupt_during_a_proposal_leaves_no_running_trial(tmp_path, batch):
    class InterruptedSampler(optuna.samplers.RandomSampler):
        """Proposes one trial's configuration, then is interrupted inside the next proposal."""

        calls = 0

        def sample_independent(self, *args, **kwargs):
            InterruptedSampler.calls += 1
            if InterruptedSampler.calls == len(SPACE.optuna_distributions()) + 2:
                raise KeyboardInterrupt
            return super().sample_independent(*args, **kwargs)

    study = open_study(None, "s1", tmp_path, metadata(), InterruptedSampler(seed=0))
    with pytest.raises(KeyboardInterrupt):
        run_search(study, SPACE, Evaluator(), budget=3, batch=batch, progress=False)
    assert n_state(study, TrialState.RUNNING) == 0
    interrupted = [t for t in study.get_trials() if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) == batch  # the trial being proposed (and the one asked before it in its round)


def test_a_ctrl_c_inside_study_ask_leaves_no_running_trial(tmp_path):
    """ask() stores a RUNNING trial before it returns the handle that could fail it: a Ctrl-C
    landing in between (here in the sampler's before_trial) is held until the trial can be failed."""

    class SigintInAsk(optuna.samplers.RandomSampler):
        asks = 0

        def before_trial(self, study, trial):
            SigintInAsk.asks += 1
            if SigintInAsk.asks == 2:
                signal.raise_signal(signal.SIGINT)
            super().before_trial(study, trial)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        study = open_study(None, "s1", tmp_path, metadata(), SigintInAsk(seed=0))
        ev = Evaluator()
        with pytest.raises(KeyboardInterrupt):
            run_search(study, SPACE, ev, budget=3, progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert n_state(study, TrialState.RUNNING) == 0
    assert len(ev.seen) == 1 and len(completed_trials(study)) == 1
    assert [t.user_attrs.get("fail_reason") for t in study.get_trials(states=(TrialState.FAIL,))] == ["interrupted"]


def test_a_ctrl_c_during_a_storage_write_lets_the_write_finish(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside SQLite's commit leaves its lock held, and the cleanup then
    fails with "database is locked": a Ctrl-C landing in a write is held until it is done."""
    study = make(tmp_path)
    write = study._storage.set_trial_user_attr
    landed = []

    def write_hit_by_ctrl_c(trial_id, key, value):
        if key == "worker" and not landed:
            landed.append(key)
            signal.raise_signal(signal.SIGINT)  # the handler runs here, before the write
        write(trial_id, key, value)

    monkeypatch.setattr(study._storage, "set_trial_user_attr", write_hit_by_ctrl_c)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    ev = Evaluator()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_search(study, SPACE, ev, budget=3, progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert landed and ev.seen == []  # stopped before the trial was evaluated
    trial, queued = study.get_trials()
    assert queued.state == TrialState.WAITING  # re-queued to run first on resume
    assert "worker" in trial.user_attrs  # the write the Ctrl-C landed in was finished
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "interrupted"
    workers = [v for k, v in study.user_attrs.items() if k.startswith("worker:")]
    assert [w["active"] for w in workers] == [False]


def test_duplicates_are_not_evaluated(tmp_path):
    study = make(tmp_path)
    ev = Evaluator()
    run_search(study, SPACE, ev, budget=2, progress=False)
    first = completed_trials(study)[0]
    study.enqueue_trial(SPACE.to_params(PeftConfig.from_dict(first["config"])))
    run_search(study, SPACE, ev, budget=3, progress=False)
    assert len(ev.seen) == 3
    dups = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" in t.user_attrs]
    assert len(dups) == 1 and dups[0].user_attrs["duplicate_of"] == first["number"]
    assert dups[0].values == [first["score"], first["percent"]]
    assert len(completed_trials(study)) == 3
    assert len(set(configs_of(study))) == 3


def test_exhausted_space_stops(tmp_path, caplog):
    tiny = SearchSpace(n_layers=2, serial_adapter=(0, 8), parallel_adapter=(0,), prefix_length=(0,))
    assert tiny.n_valid() == 3
    meta = metadata(space=tiny.to_dict())
    study = open_study(None, "tiny", tmp_path, meta, optuna.samplers.RandomSampler(seed=0))
    ev = Evaluator()
    run_search(study, tiny, ev, budget=10, progress=False)
    assert len(ev.seen) <= 3 and len({c.to_json() for c in ev.seen}) == len(ev.seen)
    assert "budget lowered" in caplog.text


def test_invalid_budget(tmp_path):
    study = make(tmp_path)
    for budget, batch in [(0, 1), (3, 0), (-1, 1), (2.5, 1)]:
        with pytest.raises(UserError):
            run_search(study, SPACE, Evaluator(), budget=budget, batch=batch, progress=False)


def test_valid_config_count_matches_enumeration():
    space = SearchSpace(n_layers=3, serial_adapter=(0, 8), parallel_adapter=(0, 4), prefix_length=(0,),
                        fixed_layers=(None, True, None))
    count = sum(
        space.contains(PeftConfig(sa, pa, 0, layers=(a, True, b)))
        for sa, pa, a, b in itertools.product((0, 8), (0, 4), (0, 1), (0, 1))
    )
    assert space.n_valid() == count


# --- several workers: stale trials, heartbeats, half-written studies --------------------------


def suggested(study: optuna.Study) -> optuna.trial.Trial:
    """A trial asked and given a configuration, as a worker does before evaluating it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna: heartbeats are meant for Study.optimize
        trial = study.ask()
    for name, dist in SPACE.optuna_distributions().items():
        trial.suggest_categorical(name, dist.choices)
    return trial


def test_configuration_proposed_by_two_workers_at_once_is_evaluated_once(tmp_path, short_waits, caplog):
    import socket
    import threading

    study = make(tmp_path)
    other = suggested(study)  # running in another live worker
    other.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getppid()})
    config = SPACE.from_params(other.params)
    study.enqueue_trial(dict(other.params))  # this worker's next proposal: the same configuration
    ev = Evaluator()
    finisher = threading.Timer(1.5, lambda: study.tell(other.number, [60.0, 1.0]))
    finisher.start()
    run_search(make(tmp_path), SPACE, ev, budget=2, progress=False)
    finisher.join()
    assert config not in ev.seen and len(ev.seen) == 1
    clash = study.get_trials()[1]
    assert clash.state == TrialState.FAIL
    assert clash.user_attrs["fail_reason"] == f"not run: trial {other.number} has the same configuration"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_trial_of_a_silent_worker_on_another_host_is_rerun(tmp_path, short_waits, caplog, request, backend):
    storage = f"sqlite:///{tmp_path / 'hb.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    study = make(tmp_path, storage=storage, heartbeat=1)
    # A worker on another host (its pid cannot be checked) asked a trial, sent one heartbeat and died.
    trial = suggested(study)
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1})
    study._storage.record_heartbeat(trial._trial_id)
    beat = time.monotonic()
    config = SPACE.from_params(trial.params)

    ev = Evaluator()
    caplog.set_level(logging.INFO, logger="autopeft")
    run_search(make(tmp_path, storage=storage, heartbeat=1), SPACE, ev, budget=1, progress=False)
    waited = time.monotonic() - beat
    err = caplog.text
    assert "trial 0 is running in worker elsewhere:1; left alone" in err
    assert "trial 0 (worker elsewhere:1) sent no heartbeat for over 3 s: marked FAIL and queued to run first" in err
    assert waited >= 3  # the trial counted against the budget of 1 until its heartbeat was 3 intervals old
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    rerun = [t for t in trials if t.user_attrs.get("rerun_of") == 0]
    assert len(rerun) == 1 and rerun[0].state == TrialState.COMPLETE
    assert ev.seen == [config]  # the stale configuration is the one trial evaluated
    assert len(completed_trials(study)) == 1


def test_heartbeat_option(tmp_path):
    from autopeft.search.workers import DEFAULT_HEARTBEAT_S

    assert make(tmp_path)._storage.get_heartbeat_interval() == DEFAULT_HEARTBEAT_S
    assert make(tmp_path, heartbeat=0)._storage.get_heartbeat_interval() is None
    make(tmp_path, storage=str(tmp_path / "s.log"))  # a journal has no heartbeat: off by default, no error
    with pytest.raises(UserError, match="journal") as err:
        make(tmp_path, storage=str(tmp_path / "s.log"), heartbeat=5)
    assert str(err.value).startswith("heartbeat needs a database storage") and "sqlite:///" in str(err.value)
    for bad in (-1, 1.5, True):
        with pytest.raises(UserError, match="^heartbeat must be a whole number"):
            make(tmp_path, heartbeat=bad)


def test_requeued_stale_trial_is_not_a_failed_configuration(tmp_path):
    from autopeft.search.samplers import make_sampler
    from autopeft.space import row_key as _key

    sampler = make_sampler("random", SPACE, seed=0)
    study = open_study(None, "h", tmp_path, metadata(), sampler)
    failed = suggested(study)
    study.tell(failed, state=TrialState.FAIL)  # its evaluation failed
    stale = suggested(study)
    study.tell(stale, state=TrialState.FAIL)  # its worker died; its configuration is queued again
    current = study.ask()
    study.enqueue_trial(dict(stale.params), user_attrs={"rerun_of": stale.number})
    history = sampler._history(study, study.get_trials(deepcopy=False)[current.number])
    def key(trial: optuna.trial.Trial) -> bytes:
        return _key(sampler._grid.row_from_params(trial.params))

    assert [_key(r) for r in history.failed_rows] == [key(failed)]
    assert [_key(r) for r in history.pending_rows] == [key(stale)]  # the queued re-run


def test_study_found_half_written_is_completed_not_refused(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Another worker created the study and has stored only part of its metadata so far.
    partial = optuna.create_study(storage=storage, study_name="s1", directions=["maximize", "minimize"])
    partial.set_user_attr("model", metadata()["model"])
    study = make(tmp_path, storage=storage)
    assert {k: study.user_attrs[k] for k in metadata()} == json.loads(json.dumps(metadata()))
    with pytest.raises(UserError, match="task"):
        make(tmp_path, storage=storage, task="MRPC")


@pytest.mark.parametrize("allocate", [
    pytest.param(lambda: torch.empty(2**50), id="torch-cpu-allocator"),  # 4 PiB: the allocator refuses
    pytest.param(lambda: bytearray(2**62), id="MemoryError"),
    pytest.param(lambda: torch.empty(2**50, device="cuda"), id="torch-cuda",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
])
def test_out_of_memory_is_recorded_and_search_continues(tmp_path, caplog, allocate):
    calls = []

    def evaluate(config, trial):
        calls.append(config)
        if len(calls) == 1:
            allocate()  # a real allocation failure inside the first trial
        return Evaluator()(config, trial)

    study = run_search(make(tmp_path), SPACE, evaluate, budget=2, progress=False)
    failed = [t for t in study.get_trials(states=(TrialState.FAIL,)) if "invalid" not in t.user_attrs["fail_reason"]]
    assert len(failed) == 1
    reason = failed[0].user_attrs["fail_reason"]
    assert reason.startswith("out of memory: ") and "--batch-size" in reason and "--max-length" in reason
    assert len(completed_trials(study)) == 2 and len(calls) == 3
    assert "failed: out of memory" in caplog.text
