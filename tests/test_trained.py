"""Using a trained run: load_trained for transformers' pipeline, `autopeft predict`, `autopeft evaluate`."""

import csv
import json

import numpy as np
import pytest

from autopeft.cli import main
from autopeft.trained import load_trained, predict

ROWS = [("good film", "pos"), ("bad film", "neg"), ("great plot", "pos"), ("dull plot", "neg"),
        ("fine acting", "pos"), ("poor acting", "neg")] * 4
SMALL = ["--epochs", "1", "--max-length", "32", "--precision", "fp32"]


def _file_task(folder, rows, columns=("text", "label")):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "dev.csv"):
        (folder / name).write_text("\n".join([",".join(columns)] + [",".join(r) for r in rows]) + "\n")
    return folder / "train.csv", folder / "dev.csv"


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A run of SA+PT (prefix folded on save) on a 2-class file task with label names pos/neg."""
    tmp = tmp_path_factory.mktemp("trained")
    train, dev = _file_task(tmp / "reviews", ROWS)
    config = tmp / "config.json"
    config.write_text(json.dumps({"serial_adapter": 4, "prefix_length": 2, "layers": [1, 1]}))
    run = tmp / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                 "--config", str(config), "--out", str(run), *SMALL]) == 0
    return run, train, dev


def test_load_trained_works_in_a_transformers_pipeline_with_label_names(trained):
    from transformers import pipeline

    run, _, _ = trained
    model, tokenizer = load_trained(run)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    texts = [t for t, _ in ROWS[:6]]
    piped = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")(texts, top_k=None)
    ours = predict(run, texts)
    for row, label, probs in zip(piped, ours["label"], ours["probabilities"]):
        by_name = {r["label"]: r["score"] for r in row}
        assert max(by_name, key=by_name.get) == label
        assert [by_name["neg"], by_name["pos"]] == pytest.approx(list(probs), abs=1e-5)


def test_predict_command_writes_labels_and_probabilities(trained, tmp_path):
    run, _, dev = trained
    out = tmp_path / "preds" / "dev.csv"
    assert main(["predict", str(run), "--input", str(dev), "--out", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(ROWS) and set(rows[0]) == {"label", "p_neg", "p_pos"}
    for row in rows:
        assert row["label"] in ("neg", "pos")
        assert float(row["p_neg"]) + float(row["p_pos"]) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == ("pos" if float(row["p_pos"]) > float(row["p_neg"]) else "neg")


def test_evaluate_command_reproduces_the_runs_dev_score(trained, capsys):
    run, train, dev = trained
    capsys.readouterr()
    assert main(["evaluate", str(run), "--task", str(train), "--dev", str(dev)]) == 0
    out = capsys.readouterr().out
    stored = json.loads((run / "result.json").read_text())["metrics"]["accuracy"]
    assert f"accuracy {stored:.2f}" in out


def test_regression_and_full_fine_tuning_runs(tiny_model_dir, tmp_path, capsys):
    rows = [(t, str(float(i % 5))) for i, (t, _) in enumerate(ROWS)]
    train, dev = _file_task(tmp_path / "scores", rows)
    config = tmp_path / "lora.json"
    config.write_text(json.dumps({"lora_rank": 2, "layers": [1, 1]}))
    base = ["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev), "--regression", *SMALL]
    assert main([*base, "--config", str(config), "--out", str(tmp_path / "reg")]) == 0
    values = predict(tmp_path / "reg", [t for t, _ in rows])["value"]
    assert values.shape == (len(rows),) and np.isfinite(values).all()

    cls_train, cls_dev = _file_task(tmp_path / "reviews", ROWS)
    full = tmp_path / "full"
    assert main(["train", "--model", str(tiny_model_dir), "--task", str(cls_train), "--dev", str(cls_dev),
                 "--config", "full", "--out", str(full), *SMALL]) == 0
    model, _ = load_trained(full)
    assert model.config.id2label == {0: "neg", 1: "pos"}
    capsys.readouterr()
    assert main(["evaluate", str(full), "--task", str(cls_train), "--dev", str(cls_dev)]) == 0
    stored = json.loads((full / "result.json").read_text())["metrics"]["accuracy"]
    assert f"accuracy {stored:.2f}" in capsys.readouterr().out


def test_bad_runs_and_inputs_get_clear_errors(trained, tmp_path, capsys):
    run, _, dev = trained
    assert main(["predict", str(tmp_path), "--input", str(dev), "--out", str(tmp_path / "p.csv")]) == 2
    assert "holds no trained run" in capsys.readouterr().err
    assert main(["predict", str(run), "--input", str(dev), "--text-a", "review", "--out", str(tmp_path / "p.csv")]) == 2
    assert "no column 'review'" in capsys.readouterr().err
    other_train, other_dev = _file_task(tmp_path / "other", [(t, {"pos": "good", "neg": "bad"}[y]) for t, y in ROWS])
    assert main(["evaluate", str(run), "--task", str(other_train), "--dev", str(other_dev)]) == 2
    assert "predicts labels ['neg', 'pos']" in capsys.readouterr().err
