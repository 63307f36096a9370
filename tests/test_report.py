"""Reports: tables, plots and config export from a small synthetic study."""

from __future__ import annotations

import csv
import json
import zlib

import matplotlib.image as mpimg
import numpy as np
import optuna
import pytest

from autopeft.errors import UserError
from autopeft.report import export_config, format_front_table, plot_loss_curve, plot_points, write_report
from autopeft.search.pareto import default_reference_point, space_max_percent
from autopeft.search.results import front_rows, record_retrained
from autopeft.search.runner import TrialResult, run_search
from autopeft.search.storage import open_study
from autopeft.space import PeftConfig
from conftest import SMALL_SPACE, SMALL_SPEC, study_metadata

optuna.logging.set_verbosity(optuna.logging.WARNING)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE, SPEC = SMALL_SPACE, SMALL_SPEC


def metadata() -> dict:
    return study_metadata(reference_point=list(
        default_reference_point(space_max_percent(SPACE, SPEC), baseline_score=52.7)))


def evaluate(config: PeftConfig, trial: optuna.trial.Trial) -> TrialResult:
    """Synthetic score: grows with parameters and layers, plus config-dependent noise."""
    percent = SPEC.percent(config)
    noise = np.random.default_rng(zlib.crc32(config.to_json().encode())).normal(0, 1.5)
    score = 55 + 6 * np.log1p(percent) + 1.0 * len(config.active_layers) + noise
    return TrialResult(score=float(score), percent=percent, metrics={"accuracy": float(score)},
                       wall_time_s=0.01, trainable_params=SPEC.trainable_params(config))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    # A journal file: much faster than SQLite for the many small writes of a search.
    s = open_study(f"journal:{out / 'study.log'}", "report", out, metadata(), optuna.samplers.RandomSampler(seed=3))
    return run_search(s, SPACE, evaluate, budget=20, progress=False)


def test_write_report_files(study, tmp_path):
    baselines = [{"name": "full fine-tuning", "score": 75.0, "percent": 100.0 * 1.0}]
    paths = write_report(study, tmp_path / "report", baselines=baselines)
    assert set(paths) == {"front.csv", "front.json", "trials.csv", "front.png", "hypervolume.png"}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0
    for name in ("front.png", "hypervolume.png"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
        image = mpimg.imread(paths[name])
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100

    front = front_rows(study)
    with paths["front.csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["trial"]) for r in rows] == [r["number"] for r in front]
    assert rows[0]["rank"] == "1" and "metric_accuracy" in rows[0]
    summary = json.loads(paths["front.json"].read_text())
    assert summary["task"] == "RTE" and summary["metric"] == "accuracy"
    assert summary["hypervolume"] > 0 and len(summary["front"]) == len(front)
    with paths["trials.csv"].open() as fh:
        assert len(list(csv.DictReader(fh))) == len(study.trials)


def test_front_table(study):
    rows = front_rows(study)
    table = format_front_table(rows)
    lines = table.splitlines()
    assert len(lines) == len(rows) + 3  # header, rule, rows, what the counts mean
    assert "prefix counted folded" in lines[-1]
    assert lines[0].split()[:3] == ["#", "trial", "configuration"]
    assert PeftConfig.from_dict(rows[0]["config"]).describe() in lines[2]
    assert len({len(line) for line in lines[:2]}) == 1  # header and rule line up
    assert "retrained" not in table

    with_retrain = [dict(rows[0], retrained_mean=71.234, retrained_std=0.5), *rows[1:]]
    table = format_front_table(with_retrain)
    assert "retrained mean ± std" in table and "71.23 ± 0.50" in table


def test_record_retrained_shows_in_rows(tmp_path):
    s = open_study(None, "rt", tmp_path, metadata(), optuna.samplers.RandomSampler(seed=0))
    run_search(s, SPACE, evaluate, budget=3, progress=False)
    number = front_rows(s)[0]["number"]
    record_retrained(s, number, [70.0, 72.0])
    row = next(r for r in front_rows(s) if r["number"] == number)
    assert row["retrained_mean"] == pytest.approx(71.0) and row["retrained_std"] == pytest.approx(2**0.5)


def test_export_config(study, tmp_path):
    front = front_rows(study)
    for k in (1, len(front)):
        path = export_config(study, k, tmp_path / f"pick{k}.json")
        config = PeftConfig.from_json_file(path)
        assert config.to_dict() == front[k - 1]["config"]
        assert SPACE.contains(config)
        assert config.describe() and SPEC.percent(config) == pytest.approx(front[k - 1]["percent"])


@pytest.mark.parametrize("pick", [0, -1, 10_000])
def test_export_bad_pick(study, tmp_path, pick):
    with pytest.raises(UserError, match=r"choose 1\.\.\d+"):
        export_config(study, pick, tmp_path / "x.json")


def test_empty_study_report(tmp_path):
    s = open_study(None, "empty", tmp_path, metadata(), optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(UserError, match="no completed trials"):
        write_report(s, tmp_path / "r")
    with pytest.raises(UserError, match="no completed trials"):
        export_config(s, 1, tmp_path / "x.json")


def test_point_and_loss_plots(tmp_path):
    rows = [{"name": "front #3: SA8 @ layers 1", "score": 66.0, "std": 1.2, "percent": 0.8}]
    baselines = [{"name": "full fine-tuning", "score": 70.0, "std": 0.5, "percent": 100.0}]
    for path in (plot_points(rows, baselines, tmp_path / "t.png", title="RTE -> MRPC", metric="f1"),
                 plot_loss_curve([0.7, 0.69, 0.6, 0.52], tmp_path / "loss.png", title="SA8 on RTE")):
        assert path.read_bytes()[:8] == PNG_MAGIC


def test_point_labels_never_overlap(tmp_path):
    """Labels of points that score close together (LoRA8 and PT24 in the default job) are moved apart."""
    from matplotlib.figure import Figure

    from autopeft.report import _place_labels

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    points = [(0.98, 54.4, "LoRA8", "b"), (1.0, 54.6, "PT24", "b"), (1.0, 54.5, "3", "r"), (1.15, 66.7, "SA24", "b"),
              (0.99, 54.3, "A1", "g")]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    ax.set_xscale("log")
    _place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) == len(points)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    fig.savefig(tmp_path / "labels.png")
