"""The `autopeft` command end to end on a tiny local model, and its answers to bad input."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest

from autopeft.cli import main

TINY_SEARCH = ["--train-examples", "32", "--dev-examples", "32", "--epochs", "1", "--max-length", "48", "--quiet"]


@pytest.fixture(scope="module")
def searched(tiny_model_dir, tmp_path_factory):
    """A finished 9-trial search on RTE with the tiny model: the 4 standard modules, 2 random, 2 replicates (the
    default noise calibration pairs), 1 MAP-SAAS proposal; scored on 249 examples held out of train."""
    out = tmp_path_factory.mktemp("search")
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "9", "--init", "2",
            "--nuts", "map", "--out", str(out), *TINY_SEARCH]
    assert main([*argv, "--baselines"]) == 0
    return out, argv


def test_search_writes_table_csv_json_and_plots(searched, capsys):
    out, _ = searched
    for name in ("front.csv", "front.json", "trials.csv", "front.png", "hypervolume.png", "study.db"):
        assert (out / name).stat().st_size > 0, name
    front = json.loads((out / "front.json").read_text())
    rows = front["front"] if isinstance(front, dict) else front
    assert rows and all("score" in r and "percent" in r for r in rows)
    assert (out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    baselines = json.loads((out / "baselines.json").read_text())  # marked in front.png
    assert sorted(baselines) == ["full fine-tuning"]  # the standard modules are trials, not baselines
    with (out / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    assert [t["standard"] for t in trials][:6] == ["SA2", "PA2", "PT2", "LoRA8", "", ""]  # then the replicates
    assert {t["fidelity"] for t in trials} == {"32x1"}
    assert front["selection"] == {"split": "train", "examples": 249, "report": "dev", "optimistic": False, "seed": 0}
    # the seed noise, from the two calibration pairs (trials 6 and 7 retrain two earlier ones with seed 1)
    assert front["noise"]["pairs"] == 2 and front["noise"]["seed_sd"] >= 0
    assert set(front["noise"]) == {"seed_sd", "config_share", "pairs"}
    assert front["n_completed"] == 9 and front["n_configurations"] == 7
    for row in front["front"]:
        assert row["n_seeds"] == len(row["scores"]) == len(row["numbers"]) and row["seeds"] == list(range(row["n_seeds"]))
        assert row["score"] == pytest.approx(sum(row["scores"]) / row["n_seeds"])
    with (out / "front.csv").open() as fh:
        header = fh.readline().strip().split(",")
    assert {"score", "score_std", "n_seeds", "scores", "trials"} <= set(header)


def test_report_prints_the_noise_and_warns_when_it_swamps_the_configurations(searched, capsys, monkeypatch):
    out, _ = searched
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "noise: seed SD" in printed and "(2 pairs)" in printed
    assert "selection: configurations chosen on 249 examples held out of train" in printed
    assert "--promote K takes it up to the fidelity you will train at" in printed  # a search without promotion
    from autopeft.search.noise import NoiseEstimate

    for share, warned in ((0.2, True), (0.6, False)):
        monkeypatch.setattr("autopeft.search.results.noise_estimate", lambda study: NoiseEstimate(3.0, share, 2))
        assert main(["report", str(out)]) == 0
        noise_warning = [line for line in capsys.readouterr().out.splitlines()
                         if line.startswith("warning: at this fidelity seed noise")]
        assert bool(noise_warning) == warned
        assert all("--train-examples" in line and "--fidelity auto" in line for line in noise_warning)


def test_report_warns_when_no_standard_module_clears_the_constant_predictor(searched, capsys, tmp_path):
    """CoLA's and MRPC's case at 640 x 2: the standard modules scored at the constant predictor's level, so the
    search fidelity could not rank configurations."""
    import optuna

    from autopeft.search.results import completed_trials

    out, _ = searched
    (tmp_path / "study.db").write_bytes((out / "study.db").read_bytes())  # a copy: the fixture is shared
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{tmp_path / 'study.db'}")
    best = max(r["score"] for r in completed_trials(study) if r["standard"])
    for constant, warned in ((best - 5.0, False), (best - 4.9, True), (None, False)):
        study.set_user_attr("constant_baseline", constant)
        assert main(["report", str(tmp_path)]) == 0
        printed = capsys.readouterr().out
        expected = (f"warning: at the search fidelity no standard module scored 5 points above the constant "
                    f"predictor (best {best:.2f} against {best - 4.9:.2f}), so the search's scores may only rank "
                    "how far configurations stray from a constant prediction; use --fidelity auto, or raise "
                    "--train-examples and/or --epochs")
        assert (expected in printed) == warned, printed


def test_search_warns_once_its_standard_modules_are_at_the_constant_predictor(tiny_model_dir, tmp_path, monkeypatch,
                                                                             caplog):
    """The same warning during the search, as soon as the standard modules are in, while a restart costs little."""
    import logging

    monkeypatch.setattr("autopeft.workflow.majority_baseline", lambda *args: {"score": 100.0})  # nothing clears
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "5", "--sampler", "random",
            "--out", str(tmp_path / "s"), *TINY_SEARCH]
    with caplog.at_level(logging.WARNING, logger="autopeft"):
        assert main(argv) == 0
    early = [r.getMessage() for r in caplog.records if "no standard module scored 5 points" in r.getMessage()]
    assert len(early) == 1 and early[0].endswith("(to change it now: Ctrl-C, then rerun with a new --out)")
    assert "against 100.00" in early[0]


def test_search_resume_does_not_repeat_trials(searched):
    out, argv = searched
    def complete():
        with sqlite3.connect(out / "study.db") as db:
            return db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]

    before = complete()
    assert before >= 9
    assert main(argv) == 0  # same command: the budget is already met, nothing runs
    assert complete() == before
    bigger = [a if a != "9" else "10" for a in argv]
    assert main(bigger) == 0
    assert complete() == before + 1


def test_report_and_export_then_train_the_export(searched, tiny_model_dir, tmp_path, capsys):
    out, _ = searched
    assert main(["report", str(out)]) == 0
    config = tmp_path / "pick.json"
    assert main(["export", str(out), "--pick", "1", "--to", str(config)]) == 0
    run = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model_dir), "--task", "RTE", "--config", str(config), "--out", str(run),
            "--train-examples", "16", "--dev-examples", "16", "--epochs", "1", "--max-length", "32"]
    capsys.readouterr()
    assert main([*argv, "--quiet"]) == 0
    assert "step" not in capsys.readouterr().err  # --quiet: no progress bar
    assert json.loads((run / "result.json").read_text())["config"] == json.loads(config.read_text())


def test_retrain_records_mean_and_std(searched, capsys):
    out, _ = searched
    assert main(["retrain", str(out), "--top", "1", "--seeds", "2", "--train-examples", "16", "--dev-examples", "16",
                 "--epochs", "1", "--max-length", "32"]) == 0
    assert "retrained" in capsys.readouterr().out
    assert main(["retrain", str(out), "--top", "2", "--seeds", "2", "--train-examples", "16", "--dev-examples", "16",
                 "--epochs", "1", "--max-length", "32", "--quiet"]) == 0
    printed, err = capsys.readouterr()
    assert "retrained" not in printed and "step" not in err  # --quiet: no bars, warnings only
    assert main(["report", str(out)]) == 0
    assert "±" in capsys.readouterr().out
    assert list((out / "retrained").glob("trial_*/seed_1/peft_weights.safetensors"))


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_resuming_with_another_task_is_refused_and_changes_nothing(searched, capsys):
    out, argv = searched
    before = (out / "study.db").read_bytes()
    err = _error(capsys, [a if a != "RTE" else "MRPC" for a in argv])
    assert "task" in err and "--study" in err
    assert (out / "study.db").read_bytes() == before


@pytest.mark.parametrize("argv,needle", [
    (["--budget", "0"], "--budget"),
    (["--batch", "-1"], "--batch"),
    (["--epochs", "0"], "--epochs must be > 0, got 0.0"),  # a fidelity field, named by its flag
    (["--train-examples", "1.5"], "--train-examples must be a positive count or a fraction"),
    (["--max-length", "4"], "--max-length must be in 8..4096"),
    (["--nuts", "12,x"], "--nuts"),
    (["--sampler", "annealing"], "annealing"),
    (["--percent-scale", "cubic"], "--percent-scale"),
    (["--sampler", "random", "--percent-scale", "linear"], "--percent-scale applies to the saasbo and gp"),
    (["--sampler", "random", "--replicates", "0.2"], "--replicates applies to the saasbo and gp"),
    (["--replicates", "1.5"], "--replicates must be a fraction"),
    (["--sampler", "random", "--calibration-pairs", "3"], "--calibration-pairs applies to the saasbo and gp"),
    (["--calibration-pairs", "-1"], "--calibration-pairs must be >= 0"),
    (["--ref-point", "50"], "--ref-point"),
    (["--heartbeat", "-1"], "--heartbeat must be a whole number"),
    (["--storage", "journal:/nonexistent/study.log", "--heartbeat", "5"], "journal storage"),  # refused before writing
    (["--target", "full"], "--target is the fidelity promotion goes up to"),
    (["--promote", "-1"], "--promote must be"),
    (["--promote", "2", "--target", "lots"], "--target must be a preset"),
    (["--promote", "2", "--target", "2400x0"], "--target must be a preset"),  # not blamed on --epochs
    (["--promote", "2", "--budget", "10"], "raise budget to at least"),
    (["--test", "x.csv"], "--test is for file tasks"),
    (["--storage", "sqlite:////nonexistent/dir/study.db"], "the folder /nonexistent/dir does not exist"),
])
def test_bad_search_options(tiny_model_dir, tmp_path, capsys, argv, needle):
    err = _error(capsys, ["search", "--model", str(tiny_model_dir), "--out", str(tmp_path / "s"), "--quiet", *argv])
    assert needle in err


def test_unknown_model_while_offline(tmp_path, capsys):
    err = _error(capsys, ["search", "--model", "no-such-org/no-such-model", "--out", str(tmp_path)])
    assert "cannot load model 'no-such-org/no-such-model'" in err and "local model folder" in err


def test_model_without_a_map(tmp_path, capsys):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)).save_pretrained(tmp_path / "gpt2")
    err = _error(capsys, ["search", "--model", str(tmp_path / "gpt2"), "--out", str(tmp_path / "s")])
    assert "gpt2" in err and "supported" in err and "bert" in err


@pytest.mark.parametrize("config,needle", [
    ({"serial_adapter": 8, "layers": [1, 1], "colour": 3}, "colour"),
    ({"layers": [1, 1]}, "no module on"),
    ({"serial_adapter": 8, "layers": [1, 1, 1, 1]}, "2 layers"),
    ({"serial_adapter": 8}, "layers"),
])
def test_bad_configuration_files(tiny_model_dir, tmp_path, capsys, config, needle):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    err = _error(capsys, ["train", "--model", str(tiny_model_dir), "--config", str(path), "--out", str(tmp_path / "o"),
                          "--train-examples", "8", "--epochs", "1"])
    assert needle in err


def test_malformed_space_file(tiny_model_dir, tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("serial_adapter: [0, 8\n")
    err = _error(capsys, ["search", "--model", str(tiny_model_dir), "--space", str(space), "--out", str(tmp_path / "s")])
    assert "space.yaml" in err and "malformed" in err


def test_bad_task_file(tiny_model_dir, tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\nhello,1\nworld,0\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nhi,7\n")
    err = _error(capsys, ["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                          "--config", "full", "--out", str(tmp_path / "o")])
    assert "dev.csv" in err and "line 2" in err and "7" in err


def test_output_path_that_is_a_file(tiny_model_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    err = _error(capsys, ["search", "--model", str(tiny_model_dir), "--out", str(blocker / "sub")])
    assert "cannot be written" in err


def test_storage_that_cannot_be_opened(tiny_model_dir, tmp_path, capsys):
    err = _error(capsys, ["search", "--model", str(tiny_model_dir), "--out", str(tmp_path / "s"),
                          "--storage", "postgresql://nobody@127.0.0.1:1/none", *TINY_SEARCH])
    assert "storage" in err.lower()


def test_report_of_a_folder_without_a_study(tmp_path, capsys):
    assert "no study" in _error(capsys, ["report", str(tmp_path)])


def test_transfer_retrains_the_front_beside_baselines(searched, tiny_model_dir, tmp_path, capsys):
    out, _ = searched
    target = tmp_path / "to-mrpc"
    argv = ["transfer", "--from", str(out), "--task", "MRPC", "--model", str(tiny_model_dir), "--top", "2",
            "--seeds", "1", "--out", str(target), "--train-examples", "16", "--dev-examples", "16", "--epochs", "1",
            "--max-length", "32", "--quiet"]
    assert main(argv) == 0
    printed, err = capsys.readouterr()
    assert "step" not in err and "retraining" not in printed  # --quiet: no bars, warnings only
    result = json.loads((target / "transfer.json").read_text())
    names = [r["name"] for r in result["rows"]]
    front = json.loads((out / "front.json").read_text())["front"]
    assert result["task"] == "MRPC" and sum(n.startswith("front #") for n in names) == min(2, len(front))
    for baseline in ("SA2", "PA2", "PT2", "LoRA8", "full fine-tuning"):  # tiny model: hidden 32 -> size 2
        assert f"baseline: {baseline}" in names and baseline in printed
    assert (target / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # Stored results are reused: a second run trains nothing and gives the same rows.
    mtimes = {p: p.stat().st_mtime for p in target.rglob("result.json")}
    assert main(argv) == 0
    assert json.loads((target / "transfer.json").read_text())["rows"] == result["rows"]
    assert {p: p.stat().st_mtime for p in target.rglob("result.json")} == mtimes


def test_quiet_silences_the_baselines_training_bars_too(tiny_model_dir, tmp_path, capsys):
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "2", "--sampler", "random",
            "--out", str(tmp_path / "s"), "--baselines", *TINY_SEARCH]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "step" not in err and "train" not in err, err[-2000:]
    assert sorted(json.loads((tmp_path / "s" / "baselines.json").read_text())) == ["full fine-tuning"]
    assert main([*[a for a in argv if a != "--quiet"], "--budget", "3"]) == 0  # without --quiet: the bars are there
    assert "trial" in capsys.readouterr().err


def _file_task(folder, rows, columns=("text", "label")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "dev.csv"):
        lines = [",".join(columns)] + [",".join(r) for r in rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder / "train.csv", folder / "dev.csv"


ROWS = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("dull plot", "neg")] * 4


@pytest.mark.parametrize("change,needle", [
    ("content", "task_identity.train_sha256"),
    ("columns", "task_identity.columns"),
    ("labels", "task_identity.labels"),
])
def test_resuming_with_another_task_by_content_is_refused(tiny_model_dir, tmp_path, capsys, change, needle):
    """Both tasks are files called train.csv (same task name): the study tells them apart by what they hold."""
    out = tmp_path / "study"
    first = _file_task(tmp_path / "a", ROWS, ("text", "text2", "label") if change == "columns" else ("text", "label"))
    if change == "columns":  # the same file content, another text column
        first = _file_task(tmp_path / "a", [(t, t, y) for t, y in ROWS], ("text", "text2", "label"))
        second, text_col = first, "text2"
    elif change == "content":
        second, text_col = _file_task(tmp_path / "b", [(t.upper(), y) for t, y in ROWS]), "text"
    else:  # the same texts and class ids, other label names
        second, text_col = _file_task(tmp_path / "b", [(t, {"neg": "bad", "pos": "good"}[y]) for t, y in ROWS]), "text"
    base = ["search", "--model", str(tiny_model_dir), "--budget", "1", "--sampler", "random", "--out", str(out),
            *TINY_SEARCH]
    assert main([*base, "--task", str(first[0]), "--dev", str(first[1])]) == 0
    before = (out / "study.db").read_bytes()
    err = _error(capsys, [*base, "--task", str(second[0]), "--dev", str(second[1]), "--text-a", text_col])
    assert needle in err and "new --out" in err
    assert (out / "study.db").read_bytes() == before


def test_file_task_name_and_metric_are_stored_and_a_new_metric_is_refused(tiny_model_dir, tmp_path, capsys):
    import optuna

    train, dev = _file_task(tmp_path / "reviews", ROWS)
    base = ["search", "--model", str(tiny_model_dir), "--budget", "1", "--sampler", "random", *TINY_SEARCH,
            "--task", str(train), "--dev", str(dev)]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0  # train.csv: named after its folder
    attrs = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{tmp_path / 'plain' / 'study.db'}").user_attrs
    assert attrs["task"] == "reviews" and attrs["metric"] == "accuracy"

    out = tmp_path / "study"
    assert main([*base, "--out", str(out), "--name", "film reviews", "--metric", "mcc"]) == 0
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["task"] == "film reviews" and study.user_attrs["metric"] == "mcc"
    assert study.user_attrs["task_source"]["primary_metric"] == "mcc"
    assert "mcc" in study.trials[0].user_attrs["metrics"]
    before = (out / "study.db").read_bytes()
    err = _error(capsys, [*base, "--out", str(out), "--name", "film reviews", "--metric", "f1"])
    assert "task_identity.metric" in err and "new --out" in err
    assert (out / "study.db").read_bytes() == before
    assert "--metric is for file tasks" in _error(capsys, ["search", "--model", str(tiny_model_dir), "--task", "RTE",
                                                          "--metric", "f1", "--out", str(tmp_path / "glue")])


def test_the_empty_text_choice_is_stored_reloaded_and_kept_on_resume(tiny_model_dir, tmp_path, capsys):
    import optuna

    from autopeft.tasks import TaskSource

    train, dev = _file_task(tmp_path / "reviews", [*ROWS, (" ", "pos")])
    out = tmp_path / "study"
    base = ["search", "--model", str(tiny_model_dir), "--budget", "1", "--sampler", "random", *TINY_SEARCH,
            "--task", str(train), "--dev", str(dev), "--out", str(out)]
    assert main([*base, "--empty-text", "drop"]) == 0
    printed = capsys.readouterr().err
    assert f"warning: {train}: left out 1 example(s) with an empty 'text' text, the first on line 18" in printed
    attrs = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}").user_attrs
    assert attrs["task_source"]["empty_text"] == "drop"
    reloaded = TaskSource.from_dict(attrs["task_source"]).load()  # what retrain, load_search and workers see
    assert len(reloaded.train) == len(ROWS) and reloaded.identity() == attrs["task_identity"]
    before = (out / "study.db").read_bytes()
    err = _error(capsys, base)  # keep (the default): other training data
    assert "task_identity.train_sha256" in err and "new --out" in err
    assert (out / "study.db").read_bytes() == before
    assert "--empty-text is for file tasks" in _error(capsys, ["search", "--task", "RTE", "--empty-text", "drop",
                                                              "--out", str(tmp_path / "glue")])
    with pytest.raises(SystemExit):
        main([*base, "--empty-text", "skip"])
    assert "invalid choice: 'skip'" in capsys.readouterr().err


def test_resuming_after_the_model_folder_was_overwritten_is_refused(tmp_path, capsys):
    from conftest import _save_tiny

    model = _save_tiny(tmp_path / "model", "bert")
    out = tmp_path / "study"
    argv = ["search", "--model", str(model), "--task", "RTE", "--budget", "1", "--sampler", "random", "--out", str(out),
            *TINY_SEARCH]
    assert main(argv) == 0
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(1)  # other weights, the same folder
    reloaded = AutoModelForSequenceClassification.from_pretrained(model)
    for p in reloaded.parameters():
        p.data.normal_()
    reloaded.save_pretrained(model)
    before = (out / "study.db").read_bytes()
    assert "model_weights" in _error(capsys, argv)
    assert (out / "study.db").read_bytes() == before


def test_a_datasets_folder_is_searched_and_reloaded_for_retrain(tiny_model_dir, tmp_path, capsys):
    import datasets
    import optuna

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = {"text": ["good film", "bad film", "great plot", "dull plot"] * 4, "label": [1, 0, 1, 0] * 4}
    datasets.DatasetDict({split: datasets.Dataset.from_dict(rows, features=features)
                          for split in ("train", "validation")}).save_to_disk(str(tmp_path / "reviews"))
    out = tmp_path / "s"
    assert main(["search", "--model", str(tiny_model_dir), "--task", str(tmp_path / "reviews"), "--budget", "1",
                 "--sampler", "random", "--out", str(out), *TINY_SEARCH]) == 0
    attrs = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}").user_attrs
    assert attrs["task"] == "reviews" and attrs["task_source"]["datasets"] == str(tmp_path / "reviews")
    assert attrs["task_identity"]["labels"] == ["negative", "positive"]
    assert main(["retrain", str(out), "--top", "1", "--seeds", "1", "--epochs", "1", "--max-length", "32"]) == 0
    assert "retrained" in capsys.readouterr().out


def test_a_glue_name_stays_a_glue_task_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    from autopeft.cli import _task_source, build_parser

    monkeypatch.chdir(tmp_path)
    (tmp_path / "RTE").mkdir()  # e.g. run from the GLUE data root
    args = build_parser().parse_args(["train", "--task", "RTE", "--config", "full", "--out", "o"])
    assert _task_source(args).to_dict() == {"name": "RTE", "data_dir": None}


def test_nuts_flag_fits_the_saas_model_fully_bayesian(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import autopeft.search.samplers as samplers
    from autopeft.errors import UserError

    make_sampler, built = samplers.make_sampler, []

    def build_then_stop(*args, **kwargs):
        built.append(make_sampler(*args, **kwargs))
        raise UserError("stopped after building the sampler")

    monkeypatch.setattr(samplers, "make_sampler", build_then_stop)
    err = _error(capsys, ["search", "--model", str(tiny_model_dir), "--out", str(tmp_path / "s"), "--quiet",
                          "--nuts", "64,32,8"])
    assert "stopped after building the sampler" in err
    options = built[0].options
    assert (options.fit, options.warmup_steps, options.num_samples, options.thinning) == ("nuts", 64, 32, 8)


def test_a_promoted_search_reports_its_answer_on_the_test_file_and_keeps_its_weights(tiny_model_dir, tmp_path,
                                                                                   capsys):
    """A file task: --dev selects, --test reports; the answer's weights load and predict with no retraining."""
    import optuna

    from autopeft.trained import load_trained

    train, dev = _file_task(tmp_path / "reviews", ROWS)
    test = tmp_path / "test.csv"
    test.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in reversed(ROWS)) + "\n")
    out = tmp_path / "study"
    argv = ["search", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev), "--test", str(test),
            "--sampler", "random", "--init", "1", "--promote", "1", "--target", "16x1", "--out", str(out),
            "--budget", "16", *TINY_SEARCH]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "answer at the target fidelity (16x1)" in printed and "scored on the test split" in printed
    summary = json.loads((out / "front.json").read_text())
    assert summary["selection"]["report"] == "test" and summary["selection"]["split"] == "dev"
    answer = summary["answer"]
    assert answer and all(m["fidelity"] == "16x1" and m["n_seeds"] == 2 for m in answer)
    assert summary["verdict"] and ("standard module" in summary["verdict"][0])
    study = optuna.load_study(study_name="autopeft", storage=f"sqlite:///{out / 'study.db'}")
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) <= 16  # the budget holds promotion too
    run = out / answer[0]["runs"][0]
    model, tokenizer = load_trained(run)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(run), "--input", str(test), "--out", str(preds), "--quiet"]) == 0
    assert len(preds.read_text().splitlines()) == len(ROWS) + 1
    # resuming with another report split (no --test: dev would report) is refused, and nothing changes
    before = (out / "study.db").read_bytes()
    err = _error(capsys, [a for a in argv if a not in ("--test", str(test))])
    assert "selection.report" in err and "new --out" in err
    assert (out / "study.db").read_bytes() == before
