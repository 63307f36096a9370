"""Training and evaluation: batching, determinism, the train command, saved weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from autopeft import PeftConfig, UserError
from autopeft.cli import main
from autopeft.models import load_model, load_tokenizer
from autopeft.modules import load_peft
from autopeft.tasks import load_task
from autopeft.training import (Fidelity, batches, build_model, default_attention, encode, fidelity_from,
                               linear_schedule_with_warmup, predict, resolve_device, train_and_evaluate)

TINY_FIDELITY = Fidelity(train_examples=48, dev_examples=40, epochs=1, max_length=64, batch_size=16)


@pytest.fixture(scope="module")
def rte():
    return load_task("RTE")


@pytest.mark.parametrize("warmup, total", [(0, 1), (6, 100), (35, 579), (50, 50)])
def test_learning_rate_schedule_is_transformers_linear_warmup(warmup, total):
    from transformers import get_linear_schedule_with_warmup

    lrs = []
    for make in (linear_schedule_with_warmup, get_linear_schedule_with_warmup):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        schedule, seen = make(optimizer, warmup, total), []
        for _ in range(total + 2):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
        lrs.append(seen)
    assert lrs[0] == lrs[1] and max(lrs[0]) > 0


def test_importing_the_trainer_leaves_peft_for_later():
    """transformers.optimization would import all of PEFT (via trainer_utils) before the first trial."""
    import subprocess
    import sys

    code = "import sys, autopeft.cli, autopeft.workflow, autopeft.training; print('peft' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_batches_pad_to_longest_and_group_by_length(rte):
    data = encode(rte.train.subset(200, seed=0), load_tokenizer("minilm"), max_length=128)
    seen, widths = [], []
    for batch in batches(data, 16, pad_id=0, shuffle=True, seed=3):
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the longest, not to 128
        widths.append(int(lengths.max()) - int(lengths.min()))
        seen.extend(batch["index"].tolist())
    assert sorted(seen) == list(range(200))  # every example exactly once
    assert np.median(widths) < 25  # grouped by length: little padding inside a batch


def test_same_seed_same_scores_and_different_seed_differs(tiny_model_dir, rte):
    config = PeftConfig(serial_adapter=8, prefix_length=2, layers=(1, 1))
    a = train_and_evaluate(str(tiny_model_dir), rte, config, TINY_FIDELITY, progress=False)
    b = train_and_evaluate(str(tiny_model_dir), rte, config, TINY_FIDELITY, progress=False)
    c = train_and_evaluate(str(tiny_model_dir), rte, config, fidelity_from("low", train_examples=48, dev_examples=40,
                           epochs=1, max_length=64, batch_size=16, seed=1), progress=False)
    assert a.loss_curve == b.loss_curve and a.metrics == b.metrics
    assert a.loss_curve != c.loss_curve


@pytest.mark.slow
def test_train_command_on_minilm_saves_reloadable_weights(tmp_path, rte):
    config_file = tmp_path / "config.json"
    config = PeftConfig(serial_adapter=12, parallel_adapter=6, prefix_length=3, layers=(0, 0, 0, 1, 1, 1))
    config_file.write_text(config.to_json())
    out = tmp_path / "run"
    assert main(["train", "--task", "RTE", "--config", str(config_file), "--out", str(out), "--train-examples", "32",
                 "--dev-examples", "24", "--epochs", "1", "--max-length", "64"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["steps"] == 1 and len(result["loss_curve"]) == 1
    assert (out / "loss.png").stat().st_size > 1000
    from autopeft.workflow import describe_model

    spec, tokenizer = describe_model("minilm", 2)
    assert result["trainable_params"] == spec.trainable_params(config)
    assert result["percent"] == pytest.approx(spec.percent(config))
    # Reloaded weights reproduce the saved dev score exactly.
    model = load_peft(load_model("minilm", 2), out)
    dev = encode(rte.dev.subset(24, seed=0), tokenizer, 64)
    preds = predict(model, dev, tokenizer.pad_token_id).astype(int)
    assert 100 * float(np.mean(preds == dev.labels)) == pytest.approx(result["metrics"]["accuracy"])


def test_full_finetune_trains_everything(tiny_model_dir, rte):
    result = train_and_evaluate(str(tiny_model_dir), rte, "full", TINY_FIDELITY, progress=False)
    assert result.percent > 100.0  # backbone + head


@pytest.mark.parametrize("field,value", [("epochs", 0), ("train_examples", -3), ("train_examples", 1.5),
                                         ("max_length", 2), ("batch_size", 0), ("lr", 5.0)])
def test_fidelity_out_of_range_is_refused(field, value):
    with pytest.raises(UserError, match=field):
        Fidelity(**{field: value})


def test_nan_loss_is_reported(tiny_model_dir, rte):
    bad = Fidelity(train_examples=32, dev_examples=8, epochs=1, max_length=32, batch_size=16, lr=0.9)
    torch.manual_seed(0)
    config = PeftConfig(serial_adapter=8, layers=(1, 1))
    with pytest.raises(FloatingPointError, match="loss became"):
        # A huge learning rate on a regression head overflows quickly; on classification it may not.
        from autopeft.tasks import TaskData, TaskSpec, Split

        spec = TaskSpec("toy", "regression", (), "pearson_spearman")
        split = Split(rte.train.text_a[:32], None, np.full(32, 1e30, dtype=np.float32))
        train_and_evaluate(str(tiny_model_dir), TaskData(spec, split, split), config, bad, progress=False)


@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "tiny_llama_dir"])
@pytest.mark.parametrize("config", [PeftConfig(serial_adapter=8, prefix_length=3, layers=(0, 1)),
                                    PeftConfig(parallel_adapter=4, lora_rank=2, layers=(0, 1))], ids=PeftConfig.describe)
def test_reusing_lower_layers_gives_the_same_result(request, model_fixture, config, rte):
    from autopeft.frozen import StatesCache

    model_dir = str(request.getfixturevalue(model_fixture))
    cache = StatesCache()
    plain = train_and_evaluate(model_dir, rte, config, TINY_FIDELITY, progress=False, reuse_lower_layers=False)
    cached = [train_and_evaluate(model_dir, rte, config, TINY_FIDELITY, progress=False, cache=cache) for _ in range(2)]
    assert cache.misses == 2 and cache.hits == 2  # train and dev states computed once, then reused
    for result in cached:
        np.testing.assert_allclose(result.loss_curve, plain.loss_curve, rtol=1e-5)
        assert result.metrics == plain.metrics


def test_bf16_precision_runs_and_stays_close(tiny_model_dir, rte):
    from dataclasses import replace

    config = PeftConfig(serial_adapter=8, layers=(1, 1))
    fp32 = train_and_evaluate(str(tiny_model_dir), rte, config, TINY_FIDELITY, progress=False)
    bf16 = train_and_evaluate(str(tiny_model_dir), rte, config, replace(TINY_FIDELITY, precision="bf16"), progress=False)
    assert bf16.loss_curve != fp32.loss_curve  # autocast really changed the arithmetic
    np.testing.assert_allclose(bf16.loss_curve, fp32.loss_curve, rtol=0.05)


@pytest.mark.parametrize("native", [(False, False), (True, False), (False, True)])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native):
    from autopeft.cli import PRECISION_CHOICES
    from autopeft.training import PRECISIONS

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native[0])
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native[1])
    expected = "bf16" if any(native) else "fp32"
    assert fidelity_from("low", device="cpu").precision == expected
    assert fidelity_from("full", device="cpu").precision == "fp32"
    assert fidelity_from("full", device="cpu", precision="auto").precision == expected
    assert fidelity_from("low", device="cpu", precision="bf16").precision == "bf16"  # asked for: kept
    assert PRECISION_CHOICES == PRECISIONS


def test_auto_precision_resolves_when_training_starts(tiny_model_dir, rte, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    config = PeftConfig(serial_adapter=8, layers=(1, 1))
    fp32 = train_and_evaluate(str(tiny_model_dir), rte, config, TINY_FIDELITY, progress=False)
    auto = train_and_evaluate(str(tiny_model_dir), rte, config, replace(TINY_FIDELITY, precision="auto"),
                              progress=False, device="cpu")
    assert auto.loss_curve == fp32.loss_curve


def test_a_search_stores_the_precision_auto_chose_and_a_resume_keeps_it(tiny_model_dir, tmp_path, capsys,
                                                                        monkeypatch):
    from autopeft.search.storage import stored_study_attrs

    def machine(native: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)

    out = tmp_path / "s"
    argv = ["search", "--model", str(tiny_model_dir), "--task", "RTE", "--budget", "1", "--sampler", "random",
            "--device", "cpu", "--train-examples", "16", "--dev-examples", "16", "--max-length", "32", "--quiet",
            "--out", str(out)]
    machine(True)
    assert main(argv) == 0
    assert stored_study_attrs(None, "autopeft", out)["fidelity"]["precision"] == "bf16"
    machine(False)  # another machine: auto would choose fp32, so the resume is refused, naming the fix
    before = (out / "study.db").read_bytes()
    assert main([*argv, "--budget", "2"]) == 2
    err = capsys.readouterr().err
    assert 'fidelity.precision: stored "bf16" vs new "fp32"' in err
    assert (out / "study.db").read_bytes() == before
    assert main([*argv, "--budget", "2", "--precision", "bf16"]) == 0
    assert stored_study_attrs(None, "autopeft", out)["fidelity"]["precision"] == "bf16"


def test_low_fidelity_switches_dropout_off(tiny_model_dir, rte):
    from autopeft.training import disable_dropout

    model = load_model(str(tiny_model_dir), 2, seed=0)
    disable_dropout(model)
    model.train()
    tok = load_tokenizer(str(tiny_model_dir))
    batch = tok(["a short sentence", "another one, a bit longer"], padding=True, return_tensors="pt")
    with torch.no_grad():
        train_mode = model(**batch).logits
        model.eval()
        eval_mode = model(**batch).logits
    assert torch.equal(train_mode, eval_mode)  # no dropout left anywhere, attention included
    assert fidelity_from("low").dropout is False and fidelity_from("full").dropout is True
    config = PeftConfig(serial_adapter=8, layers=(1, 1))
    fid = Fidelity(train_examples=32, epochs=1, batch_size=8, dev_examples=16)
    with_dropout = train_and_evaluate(str(tiny_model_dir), rte, config, fid, progress=False, cache=None)
    without = train_and_evaluate(str(tiny_model_dir), rte, config, Fidelity(**{**fid.to_dict(), "dropout": False}),
                                 progress=False, cache=None)
    assert with_dropout.loss_curve != without.loss_curve


def test_unknown_attention_is_refused_with_the_choices(tiny_model_dir, rte):
    with pytest.raises(UserError, match=r"unknown attention 'flash'.*\['matmul', 'sdpa'\]"):
        build_model(str(tiny_model_dir), rte, PeftConfig(serial_adapter=8, layers=(1, 1)), seed=0, attention="flash")


def test_device_is_the_gpu_when_torch_sees_one_and_a_missing_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    with pytest.raises(UserError, match=r"device 'cuda' was asked for but PyTorch sees no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(UserError, match=r"unknown device 'tpu'; choose auto, cpu or cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    assert default_attention(torch.device("cuda")) == "sdpa" and default_attention(torch.device("cpu")) == "matmul"


def test_train_command_on_a_missing_gpu_fails_clearly_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(PeftConfig(serial_adapter=8, layers=(1, 1)).to_dict()))
    code = main(["train", "--config", str(config), "--out", str(tmp_path / "out"), "--device", "cuda"])
    assert code == 2
    assert "PyTorch sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_the_gpu_matches_the_cpu_and_saves_cpu_weights(tiny_model_dir, rte, tmp_path, precision):
    from dataclasses import replace

    from autopeft.frozen import StatesCache

    model_dir, fidelity = str(tiny_model_dir), replace(TINY_FIDELITY, precision=precision)
    config = PeftConfig(serial_adapter=8, prefix_length=3, layers=(0, 1))  # layer 0 frozen: its states are cached
    cpu = train_and_evaluate(model_dir, rte, config, fidelity, progress=False, cache=None, device="cpu", attention="sdpa")
    cache = StatesCache()
    gpu = [train_and_evaluate(model_dir, rte, config, fidelity, progress=False, cache=cache, device="cuda",
                              out_dir=tmp_path / f"run{i}") for i in range(2)]
    assert cache.misses == 2 and cache.hits == 2
    assert all(s.device.type == "cuda" for states, _ in cache._entries.values() for s in states)
    assert gpu[0].loss_curve == gpu[1].loss_curve  # the cached states reproduce the run
    np.testing.assert_allclose(gpu[0].loss_curve, cpu.loss_curve, rtol=1e-3 if precision == "fp32" else 0.05)
    assert gpu[0].percent == cpu.percent
    reloaded = load_peft(load_model(model_dir, 2, seed=0), tmp_path / "run0")  # on the CPU
    assert all(p.device.type == "cpu" for p in reloaded.parameters())
