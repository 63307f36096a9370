"""Several `autopeft worker` processes on one study: SQLite, journal file, PostgreSQL; dead workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autopeft.search.attrs import REPLICATE_ATTR
from autopeft.search.storage import make_storage

TINY_SEARCH = ["--train-examples", "32", "--dev-examples", "32", "--epochs", "1", "--max-length", "48", "--quiet"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def worker(model: Path, out: Path, budget: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autopeft.cli", "worker", "--model", str(model), "--task", "RTE",
            "--budget", str(budget), "--out", str(out), *TINY_SEARCH, *extra]


def load(storage: str | None, out: Path) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name="autopeft", storage=make_storage(storage, out))


def evaluated(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """COMPLETE trials that were evaluated (not told as duplicates)."""
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]


def check_shared_study(study: optuna.Study, budget: int, n_workers: int) -> None:
    done = evaluated(study)
    assert len(done) == budget, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in study.trials]
    work = [(json.dumps(t.user_attrs["config"], sort_keys=True), t.user_attrs.get("replicate_index", 0)) for t in done]
    assert len(set(work)) == budget, "a configuration was trained twice with the same seed"
    by_number = {t.number: t for t in study.trials}
    for t in done:  # a replicate: the same configuration as its first evaluation, another training seed
        if "replicate_of" in t.user_attrs:
            first = by_number[t.user_attrs["replicate_of"]]
            assert first.user_attrs["config"] == t.user_attrs["config"]
            assert t.user_attrs["train_seed"] == first.user_attrs["train_seed"] + t.user_attrs["replicate_index"]
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    pids = {t.user_attrs["worker"]["pid"] for t in done}
    assert len(pids) >= min(2, n_workers), f"the work was not shared: {pids}"
    registered = [v for k, v in study.user_attrs.items() if k.startswith("worker:")]
    assert len(registered) == n_workers and not any(w["active"] for w in registered)


def run_together(cmds: list[list[str]], timeout: float = 300,
                 while_running: Callable[[list[subprocess.Popen]], None] | None = None) -> list[subprocess.CompletedProcess]:
    """Start every command at once, call `while_running(processes)` (if given), collect them all."""
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    if while_running is not None:
        while_running(procs)
    done = []
    for proc, cmd in zip(procs, cmds):
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


def _evaluating_pid(study: optuna.Study) -> int | None:
    """Pid of a worker whose trial is past its proposal (being evaluated), if any."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "proposal_seconds" in t.user_attrs and "worker" in t.user_attrs:
            return t.user_attrs["worker"]["pid"]
    return None


def _completed_by_other(study: optuna.Study, pid: int) -> bool:
    return any(t.user_attrs.get("worker", {}).get("pid") != pid for t in evaluated(study))


@contextmanager
def _storage_write_lock(storage: str | None, out: Path) -> Iterator[None]:
    """Hold the storage's write lock: no worker is inside a storage write (or, for SQLite and
    PostgreSQL, any transaction) while this runs, so a worker stopped here holds no lock."""
    if storage is None:  # SQLite: every autopeft transaction begins with BEGIN IMMEDIATE
        con = sqlite3.connect(out / "study.db", timeout=60, isolation_level=None)
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            con.execute("ROLLBACK")
            con.close()
    elif storage.endswith(".log"):  # journal file: the lock Optuna's JournalFileBackend takes to append
        from optuna.storages.journal import JournalFileSymlinkLock

        lock = JournalFileSymlinkLock(storage)
        lock.acquire()
        try:
            yield
        finally:
            lock.release()
    else:  # PostgreSQL: ACCESS EXCLUSIVE on Optuna's tables is granted only when no transaction uses them
        import psycopg

        with psycopg.connect(storage) as conn:
            tables = ", ".join(r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
            while True:  # NOWAIT and retry: waiting while holding some of the locks could deadlock a worker
                try:
                    conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE NOWAIT")
                    break
                except psycopg.errors.LockNotAvailable:
                    conn.rollback()
                    time.sleep(0.01)
            yield  # the lock ends with the transaction, when the connection's block exits


def share_the_work(storage: str | None, out: Path, timeout: float = 300,
                   max_pause: float = 120) -> Callable[[list[subprocess.Popen]], None]:
    """For `run_together`: the first worker seen evaluating a trial is paused (SIGSTOP) until
    another worker has completed a trial, so that the work is shared however fast that first
    worker is (otherwise it can finish the budget while the others still import torch)."""

    def supervise(procs: list[subprocess.Popen]) -> None:
        by_pid = {p.pid: p for p in procs}
        deadline = time.time() + timeout
        study, paused = None, None
        try:
            while paused is None and time.time() < deadline and any(p.poll() is None for p in procs):
                try:
                    study = study or load(storage, out)  # KeyError until a worker has created the study
                    paused = by_pid.get(_evaluating_pid(study))
                except Exception:  # noqa: BLE001 - the storage may still be being created
                    pass
                time.sleep(0.02)
            if paused is not None:
                with _storage_write_lock(storage, out):  # so that the paused worker holds no storage lock
                    paused.send_signal(signal.SIGSTOP)
                until = min(deadline, time.time() + max_pause)
                others = [p for p in procs if p is not paused]
                while time.time() < until and any(p.poll() is None for p in others):
                    try:
                        if _completed_by_other(study, paused.pid):
                            break
                    except Exception:  # noqa: BLE001 - e.g. SQLite busy while a worker writes
                        pass
                    time.sleep(0.1)
        finally:
            if paused is not None:
                paused.send_signal(signal.SIGCONT)

    return supervise


@pytest.mark.parametrize("backend", ["sqlite", "journal", "postgresql"])
def test_workers_share_one_study(tiny_model_dir, tmp_path, request, backend):
    # SQLite: the 4 standard modules, 3 random, the 2 noise-calibration replicates; the others: 7 trials
    out, budget = tmp_path / "study", 9 if backend == "sqlite" else 7
    storage = {"sqlite": None, "journal": str(tmp_path / "study.log")}.get(backend)
    if backend == "postgresql":
        storage = request.getfixturevalue("postgres_url")
    # SQLite: the default sampler (MAP-SAAS after 3 random), which treats the others' running trials as
    # pending; the others: the random sampler, which also never proposes a pending configuration.
    sampler = ["--init", "3", "--nuts", "map"] if backend == "sqlite" else ["--sampler", "random"]
    # Trials of about a second; `share_the_work` makes sure that more than one worker evaluates.
    extra = [*sampler, "--train-examples", "64", "--epochs", "2", *(["--storage", storage] if storage else [])]
    n_workers = 2 if backend == "postgresql" else 3  # PostgreSQL: machines sharing a server, 2 suffice
    cmds = [worker(tiny_model_dir, out, budget, *extra, "--search-seed", str(i)) for i in range(n_workers)]
    for r in run_together(cmds, while_running=share_the_work(storage, out)):
        assert r.returncode == 0, r.stderr[-3000:]
    study = load(storage, out)
    check_shared_study(study, budget, n_workers)
    if backend == "sqlite":  # the BO sampler's 2 noise-calibration replicates, made by the workers
        assert sum("replicate_of" in t.user_attrs for t in evaluated(study)) == 2, [  # who proposed what, and when
            (t.number, t.state.name, t.user_attrs.get("worker", {}).get("pid"), t.user_attrs.get("replicate_of"),
             t.system_attrs.get(REPLICATE_ATTR), str(t.datetime_start), t.user_attrs.get("duplicate_of"))
            for t in study.trials]
        with sqlite3.connect(out / "study.db") as db:
            assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    front = json.loads((out / "front.json").read_text())  # the workers wrote the report at the same time
    assert front["n_completed"] == budget
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _running_in_evaluation(db_path: Path) -> int | None:
    """Number of a RUNNING trial that is being evaluated (configuration set, heartbeat recorded)."""
    try:
        with sqlite3.connect(db_path, timeout=30) as db:
            row = db.execute(
                "select t.number from trials t join trial_heartbeats h on h.trial_id = t.trial_id "
                "join trial_user_attributes a on a.trial_id = t.trial_id "
                "where t.state = 'RUNNING' and a.key = 'proposal_seconds'"
            ).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_killed_worker_on_another_host_is_found_by_heartbeat_and_rerun(tiny_model_dir, tmp_path):
    out, budget = tmp_path / "study", 3
    # Trials of a few seconds, so that the kill lands inside one.
    slow = ["--sampler", "random", "--heartbeat", "1", "--train-examples", "96", "--epochs", "3"]
    first = subprocess.Popen(worker(tiny_model_dir, out, budget, *slow), env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while (number := _running_in_evaluation(out / "study.db")) is None and first.poll() is None:
        assert time.time() < deadline, "the first worker never started a trial"
        time.sleep(0.05)
    assert number is not None, first.communicate()[1][-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Make the dead worker look like one on another machine: its pid cannot be checked there,
    # so only the missing heartbeats tell that it is gone.
    with sqlite3.connect(out / "study.db") as db:
        (trial_id,) = db.execute("select trial_id from trials where number = ?", (number,)).fetchone()
        db.execute("update trial_user_attributes set value_json = ? where trial_id = ? and key = 'worker'",
                   (json.dumps({"host": "other-machine", "pid": first.pid}), trial_id))
        before = {n: s for n, s in db.execute("select number, state from trials")}
    assert before[number] == "RUNNING"

    second = subprocess.run(worker(tiny_model_dir, out, budget, *slow), env=ENV, capture_output=True, text=True,
                            timeout=300, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"trial {number} (worker other-machine:{first.pid}) sent no heartbeat for over 3 s" in second.stderr
    study = load(None, out)
    trials = study.get_trials()
    assert trials[number].state == TrialState.FAIL
    reruns = [t for t in trials if t.user_attrs.get("rerun_of") == number]
    assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE
    assert reruns[0].params == trials[number].params
    assert reruns[0].user_attrs["worker"]["host"] == socket.gethostname() != "other-machine"
    done = evaluated(study)
    assert len(done) == budget  # the stale trial did not count; its re-run did
    assert len({json.dumps(t.user_attrs["config"], sort_keys=True) for t in done}) == budget


def test_queued_trials_are_popped_once_by_concurrent_processes(tmp_path):
    """Optuna pops a queued trial with a read, then a write; on SQLite both must be one transaction."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(storage=make_storage(url, tmp_path), study_name="q")
    for q in range(45):
        study.enqueue_trial({"x": 1}, user_attrs={"q": q})
    start = time.time() + 5  # all three processes pop at once
    code = (
        "import sys, time, warnings, optuna; warnings.simplefilter('ignore');"
        "from pathlib import Path; from autopeft.search.storage import make_storage;"
        f"s = optuna.load_study(study_name='q', storage=make_storage({url!r}, Path('.')));"
        f"time.sleep(max(0, {start} - time.time()));"
        "print(' '.join(str(s.ask().user_attrs.get('q')) for _ in range(15)))"
    )
    results = run_together([[sys.executable, "-c", code]] * 3, timeout=120)
    popped = [q for r in results for q in r.stdout.split()]
    assert all(r.returncode == 0 for r in results), [r.stderr[-1000:] for r in results]
    assert sorted(popped, key=int) == [str(q) for q in range(45)]  # each queued trial went to one process
