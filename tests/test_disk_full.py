"""A full disk: a clear error that names what could not be written, and a rerun that resumes without loss.

The end-to-end tests fill a real small file system (a tmpfs, else a loop-mounted ext4 image) while the
command runs; they are skipped where mounting is not allowed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

from autopeft.cli import main
from autopeft.errors import DiskFullError, disk_full_error, disk_full_reported
from autopeft.report import write_report
from autopeft.search.attrs import FAIL_REASON_ATTR, RERUN_ATTR
from autopeft.search.runner import TrialResult, run_search
from autopeft.search.storage import open_study
from autopeft.space import PeftConfig
from conftest import SMALL_SPACE, SMALL_SPEC, study_metadata

FIDELITY = ["--train-examples", "16", "--dev-examples", "16", "--epochs", "1", "--max-length", "32", "--quiet"]


def synthetic_evaluate(config: PeftConfig, trial: optuna.trial.Trial) -> TrialResult:
    """A score that grows with the parameters, without training."""
    percent = SMALL_SPEC.percent(config)
    return TrialResult(score=50 + percent, percent=percent)


def _run(*cmd: str) -> str | None:
    """None when `cmd` succeeds, else why not."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        return f"{cmd[0]}: {exc.strerror}"
    return None if done.returncode == 0 else f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}"


@contextmanager
def small_disk(path: Path, size_mb: int = 20) -> Iterator[Path]:
    """A small file system mounted at `path`: a tmpfs, else a loop-mounted ext4 image (skips if neither mounts)."""
    path.mkdir()
    image = path.with_name(path.name + ".img")
    why = _run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path))
    if why is not None:
        loop = (_run("truncate", "-s", f"{size_mb}M", str(image)) or _run("mkfs.ext4", "-q", "-F", str(image))
                or _run("mount", "-o", "loop", str(image), str(path)))
        if loop is not None:
            pytest.skip(f"cannot mount a small file system here: {why}; {loop}")
    try:
        yield path
    finally:
        if _run("umount", str(path)) is not None:
            _run("umount", "-l", str(path))  # still busy: detach it now, freed when the last file closes
        image.unlink(missing_ok=True)


def _fill(disk: Path) -> Path:
    """Write a file that takes every free block of `disk`; delete it to make room again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, bytes(1 << 16))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        chunk = 4096
        while chunk:  # what is left is smaller than a chunk
            try:
                os.write(fd, bytes(chunk))
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    return filler


def _trials(db: Path) -> dict[int, tuple[str, dict]]:
    """number -> (state, user attrs) of every trial, read without taking a write lock."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        states = dict(con.execute("select number, state from trials"))
        attrs: dict[int, dict] = {n: {} for n in states}
        for number, key, value in con.execute("select t.number, a.key, a.value_json from trials t "
                                              "join trial_user_attributes a on a.trial_id = t.trial_id"):
            attrs[number][key] = json.loads(value)
    return {n: (states[n], attrs[n]) for n in states}


def _evaluated(trials: dict[int, tuple[str, dict]]) -> list[int]:
    return [n for n, (state, attrs) in trials.items() if state == "COMPLETE" and "duplicate_of" not in attrs]


def test_search_stops_on_a_full_disk_and_the_same_command_resumes(tiny_model_dir, tmp_path, capsys):
    budget = 6
    with small_disk(tmp_path / "disk") as disk:
        out = disk / "study"
        argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", str(budget),
                "--sampler", "random", "--out", str(out), *FIDELITY]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen([sys.executable, "-m", "autopeft.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:  # two trials done: the disk fills mid-search
                if (out / "study.db").is_file() and len(_evaluated(_trials_or_none(out / "study.db"))) >= 2:
                    break
                time.sleep(0.05)
            filler = _fill(disk)
            err = proc.communicate(timeout=120)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 2, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert f"autopeft: error: could not write the study storage {out / 'study.db'}: out of disk space" in err, err
        assert "run the same command again to resume" in err
        before = _trials(out / "study.db")
        done_before = _evaluated(before)
        assert 2 <= len(done_before) < budget, before

        filler.unlink()
        capsys.readouterr()
        assert main(argv) == 0
        after = _trials(out / "study.db")
        assert len(_evaluated(after)) == budget
        assert all(after[n] == before[n] for n in done_before), "a completed trial changed"
        for n, (state, _) in before.items():  # the trial the full disk cut short was failed and run again
            if state == "RUNNING":
                assert after[n][0] == "FAIL" and after[n][1][FAIL_REASON_ATTR] == "stale: interrupted run"
        with sqlite3.connect(out / "study.db") as con:
            assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert not list(out.glob(".*-front.*")), "temporary report files were left"


def _trials_or_none(db: Path) -> dict[int, tuple[str, dict]]:
    try:
        return _trials(db)
    except sqlite3.Error:  # not created yet, or busy
        return {}


def test_train_on_a_full_disk_names_the_run_folder(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "sa.json"
    config.write_text(json.dumps(PeftConfig(serial_adapter=8, layers=(1, 1)).to_dict()))
    with small_disk(tmp_path / "disk", size_mb=4) as disk:
        run = disk / "run"
        run.mkdir()
        argv = ["train", "--model", str(tiny_model_dir), "--task", "RTE", "--config", str(config), "--out", str(run),
                *FIDELITY]
        filler = _fill(disk)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"autopeft: error: could not write the trained run in {run}: out of disk space" in err, err
        assert "run the same command again" in err
        filler.unlink()
        assert main(argv) == 0
        assert json.loads((run / "result.json").read_text())["config"] == json.loads(config.read_text())


def test_a_full_disk_leaves_the_last_report_whole(tmp_path):
    study = run_search(open_study(f"journal:{tmp_path / 'study.log'}", "report", tmp_path, study_metadata(),
                                  optuna.samplers.RandomSampler(seed=0)), SMALL_SPACE, synthetic_evaluate, budget=4,
                       progress=False)
    with small_disk(tmp_path / "disk", size_mb=4) as disk:
        paths = write_report(study, disk)
        written = {name: path.read_bytes() for name, path in paths.items()}
        _fill(disk)
        expected = f"could not write the report .* in {re.escape(str(disk))}: out of disk space"
        with pytest.raises(DiskFullError, match=expected):
            write_report(study, disk)
        assert {name: path.read_bytes() for name, path in paths.items()} == written
        assert not [p.name for p in disk.iterdir() if p.name.startswith(".")], "a temporary file was left"


def test_a_trial_cut_short_by_a_full_disk_is_not_failed_and_runs_again(tmp_path):
    """The runner stops at a full disk (the next trial would fail the same way) and leaves the trial RUNNING; the
    next run fails it as stale and queues its configuration first."""
    study = open_study(f"journal:{tmp_path / 'study.log'}", "s", tmp_path, study_metadata(),
                       optuna.samplers.RandomSampler(seed=0))
    calls = []

    def full_on_third(config, trial):
        calls.append(config)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return synthetic_evaluate(config, trial)

    with pytest.raises(OSError):
        run_search(study, SMALL_SPACE, full_on_third, budget=5, progress=False)
    cut = study.trials[-1]
    assert cut.state == optuna.trial.TrialState.RUNNING and FAIL_REASON_ATTR not in cut.user_attrs
    run_search(study, SMALL_SPACE, synthetic_evaluate, budget=5, progress=False)
    assert study.trials[cut.number].user_attrs[FAIL_REASON_ATTR] == "stale: interrupted run"
    rerun = [t for t in study.trials if t.user_attrs.get(RERUN_ATTR) == cut.number]
    assert len(rerun) == 1 and rerun[0].state == optuna.trial.TrialState.COMPLETE
    assert rerun[0].params == cut.params
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 5


def _storage_error(message: str) -> optuna.exceptions.StorageInternalError:
    """What Optuna raises when a commit fails (`_create_scoped_session`)."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc


@pytest.mark.parametrize("error, target, reason", [
    (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/d/f.json"), "files in /d",
     "No space left on device: /d/f.json"),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "files in /d", os.strerror(errno.EDQUOT)),
    (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), "files in /d",
     "No space left on device"),
    (_storage_error("database or disk is full"), "the study storage /d/study.db", "database or disk is full"),
    (_storage_error("disk I/O error"), "the study storage /d/study.db", "disk I/O error"),
])
def test_full_disk_errors_name_what_could_not_be_written(error, target, reason):
    full = disk_full_error(error, "files in /d", storage="/d/study.db")
    assert isinstance(full, DiskFullError)
    assert str(full).startswith(f"could not write {target}: out of disk space ({reason}); free some space")
    assert "run the same command again to resume" in str(full)


@pytest.mark.parametrize("error", [OSError(errno.EACCES, "Permission denied"), _storage_error("database is locked"),
                                   ValueError("bad")])
def test_other_errors_pass_unchanged(error):
    assert disk_full_error(error, "files in /d") is None
    with pytest.raises(type(error)) as raised, disk_full_reported("files in /d"):
        raise error
    assert raised.value is error


def test_the_innermost_description_wins():
    outer, inner = disk_full_reported("the study folder"), disk_full_reported("the report")
    with pytest.raises(DiskFullError, match="could not write the report"), outer, inner:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
