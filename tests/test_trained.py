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


def test_a_lora_run_exported_to_peft_gives_the_same_logits(tiny_model_dir, tmp_path):
    import peft  # in the test extra
    import torch
    from transformers import AutoModelForSequenceClassification

    from autopeft.tasks import Split, read_texts
    from autopeft.training import encode, logits

    train, dev = _file_task(tmp_path / "reviews", ROWS)
    config = tmp_path / "lora.json"
    config.write_text(json.dumps({"lora_rank": 4, "layers": [0, 1]}))  # LoRA in the second layer only
    run = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                 "--config", str(config), "--out", str(run), *SMALL]) == 0
    # One step leaves B near its zero start; give every LoRA and head weight a clearly non-zero value, so that
    # a weight not carried over (or carried to the wrong place) moves the logits far beyond the tolerance.
    from safetensors.torch import load_file, save_file

    weights = load_file(run / "peft_weights.safetensors")
    torch.manual_seed(0)
    save_file({k: torch.randn_like(v) * 0.3 for k, v in weights.items()}, run / "peft_weights.safetensors")
    assert main(["export", str(run), "--format", "peft", "--to", str(tmp_path / "adapter")]) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    exported = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    ours, tokenizer = load_trained(run)
    texts, _ = read_texts(dev, "text")
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = exported(**batch).logits.numpy()
    mine = logits(ours, encode(Split(texts, None, np.zeros(len(texts))), tokenizer, 32), tokenizer.pad_token_id)
    assert np.abs(theirs - mine).max() < 1e-4
    base_only = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2).eval()
    with torch.no_grad():
        assert np.abs(base_only(**batch).logits.numpy() - mine).max() > 0.1  # the exported weights matter


@pytest.mark.parametrize("config,needle", [
    ({"serial_adapter": 4, "layers": [1, 1]}, "serial adapter"),
    ({"prefix_length": 2, "lora_rank": 2, "layers": [1, 1]}, "prefix"),
])
def test_what_peft_cannot_represent_is_refused(tiny_model_dir, tmp_path, capsys, config, needle):
    train, dev = _file_task(tmp_path / "reviews", ROWS)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                 "--config", str(path), "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", "peft", "--to", str(tmp_path / "adapter")]) == 2
    err = capsys.readouterr().err
    assert "PEFT export covers LoRA-only configurations" in err and needle in err
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()
