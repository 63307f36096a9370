"""The method registry: a new PEFT method is one module plus one registry line."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from conftest import make_tiny, tiny_batch
from toy_method import FfnScale

from autopeft.methods import METHODS, register, size_keys
from autopeft.models import load_model
from autopeft.modules import fold, inject, load_peft, model_spec, save_peft, trainable_params
from autopeft.report import _flat
from autopeft.search.samplers import make_sampler
from autopeft.space import PeftConfig, SearchSpace
from autopeft.tasks import load_task
from autopeft.training import Fidelity, train_and_evaluate
from autopeft.workflow import baseline_configs

@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(METHODS, "ffn_scale", FfnScale())  # the one registry line (undone after the test)
    return METHODS["ffn_scale"]


def test_the_built_in_methods_are_registered_in_configuration_order():
    assert size_keys() == ("serial_adapter", "parallel_adapter", "prefix_length", "lora_rank")
    with pytest.raises(ValueError, match="exists already"):
        register(METHODS["lora_rank"])


def test_a_registered_toy_method_is_known_to_configurations_spaces_and_counts(toy, family):
    model = make_tiny(family)
    spec = model_spec(model)
    n, last = spec.n_layers, spec.n_layers - 1
    layers = [0] * last + [1]
    config = PeftConfig.from_dict({"ffn_scale": 1, "serial_adapter": 4, "layers": layers})
    assert config.ffn_scale == 1 and config.describe() == f"SA4+Scale1 @ layers {last}"
    assert PeftConfig.from_dict(config.to_dict()) == config
    old = PeftConfig(serial_adapter=4, layers=layers)  # as if built before the registration
    assert old.to_dict()["ffn_scale"] == 0 and old == PeftConfig.from_dict({"serial_adapter": 4, "layers": layers})

    space = SearchSpace.from_dict({}, hidden_size=spec.hidden_size, n_layers=n)
    assert space.ffn_scale == (0, 1) and "ffn_scale" in space.searched_sizes
    assert "ffn_scale" in space.optuna_distributions() and space.to_dict()["ffn_scale"] == [0, 1]
    assert SearchSpace.from_dict(space.to_dict(), spec.hidden_size, n) == space

    before = model(**tiny_batch()).logits
    inject(model, config, seed=0)
    fold(model)
    assert trainable_params(model) == spec.trainable_params(config)  # the analytic count holds
    assert spec.module_params(config) == spec.module_params(old) + spec.hidden_size
    with torch.no_grad():
        assert torch.allclose(model(**tiny_batch()).logits, before, atol=1e-5)  # untrained: no change
        model.autopeft[f"scale_{last}"].scale.copy_(torch.linspace(-2.0, 2.0, spec.hidden_size))
        assert not torch.allclose(model(**tiny_batch()).logits, before, atol=1e-4)  # the hook is in the forward

    assert baseline_configs(spec, full_finetuning=False)["Scale1"] == PeftConfig(ffn_scale=1, layers=(1,) * n)
    assert _flat({"number": 0, "config": config.to_dict(), "score": 1.0, "percent": 0.1})["ffn_scale"] == 1


def test_a_toy_method_is_searched_trained_saved_and_loaded(toy, tiny_model_dir, tmp_path):
    spec = model_spec(load_model(str(tiny_model_dir), 2))
    space = SearchSpace(spec.n_layers, serial_adapter=(0, 4), ffn_scale=(0, 1))
    sampler = make_sampler("saasbo", space, seed=0, n_init=2, percent_fn=spec.percent, fit="map", calibration_pairs=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    seen = []

    def objective(trial):
        for name, dist in space.optuna_distributions().items():
            trial.suggest_categorical(name, dist.choices)
        config = space.from_params(trial.params)
        seen.append(config)
        return float(config.ffn_scale), float(config.serial_adapter)

    study.optimize(objective, n_trials=4)  # 2 random, then 2 BO proposals over the toy's dimension too
    assert all(space.contains(c) for c in seen) and len(set(seen)) == 4

    rte = load_task("RTE")
    config = PeftConfig(ffn_scale=1, layers=(0,) * (spec.n_layers - 1) + (1,))
    fidelity = Fidelity(train_examples=32, dev_examples=16, epochs=1, max_length=32, batch_size=16)
    result = train_and_evaluate(str(tiny_model_dir), rte, config, fidelity, out_dir=tmp_path / "run", progress=False)
    assert result.trainable_params == spec.trainable_params(config)
    model = load_model(str(tiny_model_dir), 2)
    load_peft(model, tmp_path / "run")
    trained = model.autopeft[f"scale_{spec.n_layers - 1}"].scale.detach()
    assert not np.allclose(trained.numpy(), 1.0)  # trained, saved and loaded back
