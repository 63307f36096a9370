"""Using a trained run: load_trained for transformers' pipeline, `autopeft predict`, `autopeft evaluate`."""

import csv
import json
from pathlib import Path

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


@pytest.mark.parametrize("model", ["tiny_model_dir", "tiny_mpnet_dir"])  # BERT, and MPNet's attention names
def test_a_lora_run_exported_to_peft_gives_the_same_logits(model, request, tmp_path):
    import peft  # in the test extra

    tiny_model_dir = request.getfixturevalue(model)
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


PEFT_REFUSAL = "PEFT export covers configurations of one method PEFT represents exactly (LoRA)"


@pytest.mark.parametrize("export_format,config,needles", [
    ("peft", {"serial_adapter": 4, "layers": [1, 1]}, [PEFT_REFUSAL, "serial adapter"]),
    ("peft", {"prefix_length": 2, "lora_rank": 2, "layers": [1, 1]}, [PEFT_REFUSAL, "prefix"]),
    ("adapters", {"serial_adapter": 4, "parallel_adapter": 4, "layers": [1, 1]}, ["SA and PA sit at the same place"]),
    ("adapters", {"serial_adapter": 5, "layers": [1, 1]}, ["a bottleneck of 5 cannot be written"]),  # 32 // (32 / 5) = 4
])
def test_what_an_export_format_cannot_represent_is_refused(tiny_model_dir, tmp_path, capsys, export_format, config,
                                                           needles):
    train, dev = _file_task(tmp_path / "reviews", ROWS)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    run = tmp_path / "run"
    assert main(["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                 "--config", str(path), "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--format", export_format, "--to", str(tmp_path / "adapter")]) == 2
    err = capsys.readouterr().err
    assert all(needle in err for needle in needles), err
    assert not (tmp_path / "adapter" / "adapter_config.json").exists()


ADAPTERS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-adapters" / "bin" / "python"
# Every method alone, and the unions `adapters` accepts; layers [0, 1] leaves layer 0 out.
ADAPTERS_CONFIGS = [
    {"serial_adapter": 8, "layers": [1, 1]},
    {"parallel_adapter": 4, "layers": [0, 1]},
    {"prefix_length": 3, "layers": [0, 1]},
    {"lora_rank": 2, "layers": [1, 1]},
    {"prefix_length": 2, "parallel_adapter": 8, "layers": [1, 1]},
    {"prefix_length": 2, "serial_adapter": 4, "lora_rank": 2, "layers": [0, 1]},
]


def test_runs_exported_to_adapters_give_the_same_logits(tiny_model_dir, tmp_path):
    """Each export, loaded by AdapterHub `adapters` 1.3.0 in its own venv (scripts/adapters_venv.sh, run by
    scripts/test.sh), gives autopeft's logits within 1e-4, and its head keeps the label names."""
    import subprocess

    import torch
    from safetensors.torch import load_file, save_file

    from autopeft.tasks import Split, read_texts
    from autopeft.training import encode, logits

    assert ADAPTERS_PYTHON.is_file(), "the `adapters` venv is missing: run bash scripts/adapters_venv.sh"
    train, dev = _file_task(tmp_path / "reviews", ROWS)
    texts, _ = read_texts(dev, "text")
    # texts of several lengths, so that padding (and the prefix's mask over it) is compared too
    texts = [*texts[:6], "a long and winding review of a film whose plot was dull", "fine"]
    jobs, ours = [], []
    for k, config in enumerate(ADAPTERS_CONFIGS):
        path, run = tmp_path / f"config{k}.json", tmp_path / f"run{k}"
        path.write_text(json.dumps(config))
        assert main(["train", "--model", str(tiny_model_dir), "--task", str(train), "--dev", str(dev),
                     "--config", str(path), "--out", str(run), *SMALL]) == 0
        # clearly non-zero weights everywhere (one step leaves the up-projections near zero), so that a weight
        # carried to the wrong place moves the logits far beyond the tolerance. The prefix gets 10x more: a
        # few prefix vectors in one layer of a random tiny BERT (near-uniform attention, an output projection
        # of std 0.02) move its logits too little at 0.3 for the `logits_without` check, on some random models.
        weights = load_file(run / "peft_weights.safetensors")
        torch.manual_seed(k)
        save_file({key: torch.randn_like(v) * (3.0 if key.startswith("autopeft.prefix.") else 0.3)
                   for key, v in weights.items()}, run / "peft_weights.safetensors")
        assert main(["export", str(run), "--format", "adapters", "--to", str(tmp_path / f"adapter{k}")]) == 0
        model, tokenizer = load_trained(run)
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        ours.append(logits(model, encode(Split(texts, None, np.zeros(len(texts))), tokenizer, 32),
                           tokenizer.pad_token_id))
        jobs.append({"base": str(tiny_model_dir), "adapter": str(tmp_path / f"adapter{k}"),
                     **{key: batch[key].tolist() for key in ("input_ids", "attention_mask")}})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([str(ADAPTERS_PYTHON), str(Path(__file__).with_name("adapters_logits.py")),
                    str(tmp_path / "jobs.json"), str(tmp_path / "out.json")], check=True, timeout=600)
    for config, mine, theirs in zip(ADAPTERS_CONFIGS, ours, json.loads((tmp_path / "out.json").read_text())):
        diff = np.abs(np.array(theirs["logits"]) - mine).max()
        without = np.abs(np.array(theirs["logits_without"]) - mine).max()
        assert diff < 1e-4, (config, diff)
        assert without > 1e-2, (config, without)  # 100x the tolerance: the adapter matters
        assert theirs["label2id"] == {"neg": 0, "pos": 1}


def test_peft_prefix_tuning_shifts_positions(tiny_model_dir):
    """Why prefix tuning is not exported to PEFT: PEFT's prefix, given to BERT as past keys and values, moves
    the input's position embeddings by the prefix length. With autopeft's prefix vectors in PEFT's layout, PEFT
    matches autopeft only when autopeft's positions are shifted too. If this test fails, PEFT changed: export it."""
    import torch
    from peft import PrefixTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from autopeft import apply
    from autopeft.modules import fold

    length, ids = 3, torch.tensor([[101, 2204, 2143, 102, 0], [101, 2919, 5436, 2143, 102]])
    batch = {"input_ids": ids, "attention_mask": (ids > 0).long()}
    ours = apply(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2),
                 {"prefix_length": length, "layers": [1, 1]})
    fold(ours)
    torch.manual_seed(0)
    ours.autopeft["prefix"].prefix.data.normal_()
    ours.eval()
    theirs = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2),
                            PrefixTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=length)).eval()
    # ours (layers, 2, length, kv_dim) -> PEFT's (length, layers x {key, value} x kv_dim)
    prefix = ours.autopeft["prefix"].prefix.data
    theirs.prompt_encoder["default"].embedding.weight.data.copy_(prefix.permute(2, 0, 1, 3).reshape(length, -1))
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        peft_logits = theirs(**batch).logits
        assert (peft_logits - ours(**batch).logits).abs().max() > 1e-3
        assert (peft_logits - ours(**batch, position_ids=positions + length).logits).abs().max() < 1e-5
