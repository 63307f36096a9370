"""Loading a model folder that is damaged, incomplete, or whose config.json its weights do not fit."""

from __future__ import annotations

import json
import shutil

import pytest

from autopeft import UserError
from autopeft.models import load_model, load_tokenizer, weights_fingerprint


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """A copy of the tiny BERT folder that a test may damage."""
    return shutil.copytree(tiny_model_dir, tmp_path / "model")


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


def test_an_intact_folder_loads(model_copy):
    assert load_model(str(model_copy), 2) is not None


@pytest.mark.parametrize("keep", [1000, -10, 0])
def test_a_truncated_weight_file_is_named(model_copy, keep):
    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(UserError, match="damaged or incomplete") as err:
        load_model(str(model_copy), 2)
    assert str(weights) in str(err.value) and "point --model at an intact model folder" in str(err.value)


def test_a_truncated_torch_weight_file_is_named(model_copy):
    import torch
    from safetensors.torch import load_file

    (model_copy / "model.safetensors").rename(model_copy / "weights.tmp")
    torch.save(load_file(model_copy / "weights.tmp"), model_copy / "pytorch_model.bin")
    (model_copy / "weights.tmp").unlink()
    assert load_model(str(model_copy), 2) is not None
    weights = model_copy / "pytorch_model.bin"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(UserError, match=f"weight file {weights} is damaged or incomplete"):
        load_model(str(model_copy), 2)


def test_a_missing_weight_file_or_shard_is_named(model_copy, tmp_path):
    from transformers import AutoModelForSequenceClassification

    sharded = tmp_path / "sharded"
    AutoModelForSequenceClassification.from_pretrained(model_copy).save_pretrained(sharded, max_shard_size="1MB")
    shard = sorted(sharded.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(UserError, match=f"the weight file {shard} is missing"):
        load_model(str(sharded), 2)
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(UserError, match=f"{model_copy} has no weight file .*download or save the model"):
        load_model(str(model_copy), 2)


@pytest.mark.parametrize("changes,needle", [
    ({"hidden_size": 64}, r"of another shape, e.g. bert\.\S+: \[32\] in the weights, \[64\] in the config"),
    ({"intermediate_size": 128}, r"6 of another shape"),
    ({"num_hidden_layers": 3}, r"16 missing from the weights, e.g. bert\.encoder\.layer\.2\."),
    ({"num_hidden_layers": 1}, r"16 in the weights but not in the config's model, e.g. bert\.encoder\.layer\.1\."),
])
def test_a_config_the_weights_do_not_fit_is_refused(model_copy, changes, needle):
    """transformers would re-initialise these weights at random, with only a log message."""
    _edit_config(model_copy, **changes)
    with pytest.raises(UserError, match="its weights do not fit its config.json") as err:
        load_model(str(model_copy), 2)
    assert err.match(needle) and "put back the config.json that came with the weights" in str(err.value)


def test_a_new_head_and_an_absent_pooler_are_fine(tmp_path, tiny_model_dir):
    from transformers import AutoConfig, BertForMaskedLM

    load_model(str(tiny_model_dir), 5)  # saved with 2 labels: a head of another size is re-initialised
    BertForMaskedLM(AutoConfig.from_pretrained(tiny_model_dir)).save_pretrained(tmp_path / "mlm")  # no pooler
    assert load_model(str(tmp_path / "mlm"), 2) is not None


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_a_damaged_json_file_is_named(model_copy, name):
    path = model_copy / name
    path.write_text(path.read_text()[:50])
    with pytest.raises(UserError, match=f"{path} is damaged or incomplete \\(not valid JSON\\)"):
        (load_tokenizer if name == "tokenizer.json" else lambda m: load_model(m, 2))(str(model_copy))


def test_an_unreadable_weight_file_is_named_by_the_fingerprint(model_copy):
    from pathlib import Path

    if not Path("/proc/self/mem").is_file():
        pytest.skip("needs Linux's /proc/self/mem, a file that cannot be read from its start")
    unreadable = model_copy / "extra.bin"
    unreadable.symlink_to("/proc/self/mem")  # reading it fails with EIO, even as root
    with pytest.raises(UserError, match=f"cannot read the weight file {unreadable}"):
        weights_fingerprint(str(model_copy))


def test_the_cli_reports_a_damaged_model_without_a_traceback(model_copy, tmp_path, capsys):
    from autopeft.cli import main

    weights = model_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    argv = ["train", "--model", str(model_copy), "--task", "RTE", "--config", "full", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("autopeft: error: cannot load model") and str(weights) in err
    assert "Traceback" not in err
