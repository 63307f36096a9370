"""`--fidelity auto`: the ladder climbs while seed noise swamps the configurations; the choice is stored."""

from __future__ import annotations

import json
import zlib

import numpy as np

import autopeft.calibrate as calibrate_module
from autopeft.calibrate import (AUTO_LADDER, MIN_MARGIN, calibrate, calibration_configs, clears_baseline,
                                describe_calibration)
from autopeft.cli import main
from autopeft.training import FIDELITIES
from conftest import SMALL_SPACE

LOW = FIDELITIES["low"]


def synthetic(noise_only_at: set[int]):
    """train(config, fidelity): pure seed noise at the given train-example counts, else a configuration effect."""
    calls = []

    def train(config, fidelity):
        calls.append((config.to_json(), fidelity.train_examples, fidelity.seed))
        rng = np.random.default_rng([zlib.crc32(config.to_json().encode()), fidelity.seed, fidelity.train_examples])
        if fidelity.train_examples in noise_only_at:
            return 50 + 5 * rng.normal()
        return 50 + 10 * (config.serial_adapter / 16 + sum(config.layers)) + 0.5 * rng.normal()

    return train, calls


def test_auto_climbs_past_a_fidelity_that_is_pure_noise(tmp_path):
    train, calls = synthetic(noise_only_at={640})
    chosen, records = calibrate(train, SMALL_SPACE, LOW, seed=0, path=tmp_path / "c.json")
    assert (chosen.train_examples, chosen.epochs) == AUTO_LADDER[1]
    assert chosen.precision == LOW.precision and chosen.dropout == LOW.dropout  # the rest of the base is kept
    assert len(records) == 2 and [r["chosen"] for r in records] == [False, True]
    assert records[0]["noise"]["config_share"] < 0.5 <= records[1]["noise"]["config_share"]
    configs = calibration_configs(SMALL_SPACE, 0)
    assert len({c.to_json() for c in configs}) == 6
    assert len(calls) == 2 * 6 * 2 and {s for _, _, s in calls} == {0, 1}  # 2 rungs x 6 configurations x 2 seeds
    # resumed from the file: nothing is trained again
    again, again_records = calibrate(train, SMALL_SPACE, LOW, seed=0, path=tmp_path / "c.json")
    assert again == chosen and again_records == records and len(calls) == 24


def test_auto_stops_at_the_first_rung_that_shows_signal_and_at_the_end_of_the_ladder():
    train, _ = synthetic(noise_only_at=set())
    chosen, records = calibrate(train, SMALL_SPACE, LOW, seed=1)
    assert chosen.train_examples == 640 and len(records) == 1
    # the score depends on the seed only: the configurations explain nothing at any rung
    chosen, records = calibrate(lambda config, f: 50.0 + 5 * (f.seed % 2), SMALL_SPACE, LOW, seed=1)
    assert (chosen.train_examples, chosen.epochs) == AUTO_LADDER[-1] and len(records) == len(AUTO_LADDER)
    assert records[-1]["chosen"] and all(r["noise"]["config_share"] == 0 for r in records)


def test_a_rung_that_barely_beats_the_constant_predictor_is_not_chosen():
    """MRPC at 640 x 2: the configurations' scores differ reliably (share >= 0.5) but all sit at the constant
    predictor's score (every model predicts the majority class), so the ladder must climb on."""
    def train(config, fidelity):
        effect = config.serial_adapter / 16 + sum(config.layers)
        rng = np.random.default_rng([zlib.crc32(config.to_json().encode()), fidelity.seed, fidelity.train_examples])
        lift = 1.0 if fidelity.train_examples == 640 else 8.0  # points above the constant predictor's 81.2
        return 81.2 + lift + 0.3 * effect + 0.05 * rng.normal()

    chosen, records = calibrate(train, SMALL_SPACE, LOW, seed=0, constant_baseline=81.2)
    assert records[0]["noise"]["config_share"] >= 0.5  # the share alone would accept the first rung
    assert (chosen.train_examples, chosen.epochs) == AUTO_LADDER[1] and [r["chosen"] for r in records] == [False, True]
    assert records[0]["constant_baseline"] == 81.2 and records[0]["mean_score"] < 81.2 + MIN_MARGIN
    assert not clears_baseline(records[0]) and clears_baseline(records[1])
    lines = describe_calibration(records).splitlines()
    assert "constant predictor 81.2, too close" in lines[0] and "too close" not in lines[1]
    # without a baseline the share alone decides, as before
    chosen, _ = calibrate(train, SMALL_SPACE, LOW, seed=0, constant_baseline=None)
    assert chosen.train_examples == AUTO_LADDER[0][0]


def test_a_pure_noise_rung_rarely_passes():
    """With 6 configurations x 2 seeds of pure Gaussian noise, the share reaches 0.5 by chance about 10% of the time."""
    passed = 0
    for seed in range(200):
        train, _ = synthetic(noise_only_at={640})
        _, records = calibrate(train, SMALL_SPACE, LOW, seed=seed, ladder=[(640, 2)])
        passed += records[0]["noise"]["config_share"] >= 0.5
    assert passed / 200 < 0.2


TINY = ["--dev-examples", "16", "--max-length", "32", "--quiet"]


def test_auto_fidelity_is_stored_and_another_fidelity_is_refused_on_resume(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(calibrate_module, "AUTO_LADDER", ((16, 1), (24, 1)))
    monkeypatch.setattr(calibrate_module, "CALIBRATION_CONFIGS", 3)
    out = tmp_path / "s"
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "2", "--sampler", "random",
            "--fidelity", "auto", "--out", str(out), *TINY]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "fidelity chosen by calibration" in printed and "<- chosen" in printed
    assert "(constant predictor " in printed  # each rung is shown against the constant predictor
    from autopeft.search.storage import stored_study_attrs

    attrs = stored_study_attrs(None, "autopeft", out)
    chosen = [r for r in attrs["calibration"] if r["chosen"]]
    assert len(chosen) == 1 and attrs["fidelity"] == chosen[0]["fidelity"]
    # the tiny random model learns nothing: the margin rule climbs to the last rung, and the report warns
    assert chosen[0] is attrs["calibration"][-1] and ("less than 5 points above the constant predictor" in printed) == (
        not clears_baseline(chosen[0]))
    assert (attrs["fidelity"]["train_examples"], attrs["fidelity"]["epochs"]) in ((16, 1), (24, 1))
    assert len(json.loads((out / "calibration.json").read_text())) == 3 * 2 * len(attrs["calibration"])
    before = (out / "study.db").read_bytes()
    for other in (["--fidelity", "low"], ["--fidelity", "auto", "--epochs", "2"]):
        assert main([a for a in argv if a not in ("--fidelity", "auto")] + other) == 2
        assert "fidelity" in capsys.readouterr().err
        assert (out / "study.db").read_bytes() == before
    assert main([*argv, "--budget", "3"]) == 0  # auto again: resumes with the stored choice, one more trial
    assert stored_study_attrs(None, "autopeft", out)["fidelity"] == attrs["fidelity"]


def test_auto_on_a_study_made_with_a_preset_is_refused(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "s"
    base = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "1", "--sampler", "random",
            "--out", str(out), *TINY]
    assert main([*base, "--train-examples", "16", "--epochs", "1"]) == 0
    before = (out / "study.db").read_bytes()
    assert main([*base, "--fidelity", "auto"]) == 2
    assert "not --fidelity auto" in capsys.readouterr().err
    assert (out / "study.db").read_bytes() == before


def test_a_task_smaller_than_the_ladder_skips_rungs_that_change_nothing():
    """250 train examples: 640x2 trains 250x2, 1280x3 trains 250x3, and the larger rungs would repeat it."""
    from autopeft.calibrate import calibrate
    from autopeft.space import SearchSpace
    from autopeft.training import Fidelity

    seen = []

    def train(config, fidelity):
        seen.append((fidelity.train_examples, fidelity.epochs))
        return float(len(seen) % 3)  # seed noise only: every rung is tried

    space = SearchSpace(2, (0, 4, 8), (0, 4), (0, 2))
    chosen, records = calibrate(train, space, Fidelity(train_examples=640, epochs=2), seed=0, n_configs=3,
                                available=250)
    assert [(r["fidelity"]["train_examples"], r["fidelity"]["epochs"]) for r in records] == [(250, 2), (250, 3)]
    assert set(seen) == {(250, 2), (250, 3)} and chosen.train_examples == 250


def test_the_noise_advice_fits_the_tasks_size():
    from dataclasses import replace

    from conftest import study_metadata

    from autopeft.search.record import StudyRecord
    from autopeft.workflow import _more_fidelity_advice

    record = StudyRecord.from_dict(study_metadata())
    small = replace(record, fidelity={"train_examples": 640}, fidelity_label="250x2",
                    selection={"split": "dev", "examples": 56})
    advice = _more_fidelity_advice(small, auto=True)
    assert "every one of the 250 train examples is used already" in advice and "--train-examples" not in advice
    assert "only 56 examples to choose on" in advice
    big = replace(record, fidelity={"train_examples": 640}, fidelity_label="640x2",
                  selection={"split": "train", "examples": 575})
    assert _more_fidelity_advice(big, auto=True) == "raise --train-examples and/or --epochs, or use --fidelity auto"
