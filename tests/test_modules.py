"""The PEFT modules on tiny BERT and Llama models: semantics, freezing, counting, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from autopeft import PeftConfig, SearchSpace, UserError
from autopeft.modules import attention_implementation, fold, inject, load_peft, model_spec, save_peft, trainable_params
from autopeft.modules.inject import _matmul_attention
from conftest import make_tiny, tiny_batch

N_LAYERS = 3
ALL = (1,) * N_LAYERS
NO_PREFIX_CONFIGS = [
    PeftConfig(serial_adapter=8, layers=ALL),
    PeftConfig(parallel_adapter=4, layers=(0, 1, 1)),
    PeftConfig(lora_rank=2, layers=(1, 0, 1)),
    PeftConfig(serial_adapter=4, parallel_adapter=16, lora_rank=1, layers=ALL),
]
EVERY_MODULE = [
    PeftConfig(serial_adapter=8, layers=(0, 1, 1)),
    PeftConfig(parallel_adapter=8, layers=(0, 1, 0)),
    PeftConfig(prefix_length=5, layers=(0, 0, 1)),
    PeftConfig(lora_rank=4, layers=(0, 1, 1)),
    PeftConfig(serial_adapter=2, parallel_adapter=2, prefix_length=3, lora_rank=2, layers=(0, 1, 1)),
]


def _base_model(family):
    """The tiny base model with the attention `inject` sets (matmul, compared with SDPA below)."""
    model = make_tiny(family)
    model.set_attn_implementation(attention_implementation("matmul"))
    return model


def _outputs(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True)


@pytest.mark.parametrize("config", NO_PREFIX_CONFIGS, ids=PeftConfig.describe)
def test_untrained_configuration_is_exactly_the_base_model(family, config):
    batch = tiny_batch()
    base = _outputs(_base_model(family), batch)
    peft = _outputs(inject(make_tiny(family), config), batch)
    assert torch.equal(peft.logits, base.logits)
    for a, b in zip(peft.hidden_states, base.hidden_states):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config", [PeftConfig(serial_adapter=4, layers=ALL), PeftConfig(prefix_length=3, lora_rank=2, layers=(1, 0, 1))],
                         ids=PeftConfig.describe)
@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_matmul_attention_matches_sdpa(family, config, padded, precision):
    """autopeft's matmul attention computes what torch's SDPA does: logits and gradients
    (padded batch, prefix keys, Llama's grouped KV heads, and without padding, where no mask
    is built and Llama's causal mask is the attention's own); under bf16 autocast too, where
    its softmax runs in bf16 (within bf16 rounding of SDPA's)."""
    batch = tiny_batch()
    if not padded:
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    results = []
    for attention in ("matmul", "sdpa"):
        model = inject(make_tiny(family), config, seed=0)
        with torch.no_grad():
            for p in model.autopeft.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        model.set_attn_implementation(attention_implementation(attention))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(**batch).logits.float()
        logits.square().sum().backward()
        grads = [p.grad for p in model.autopeft.parameters()]
        results.append((logits.detach(), grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    if precision == "fp32":
        torch.testing.assert_close(logits_a, logits_b, rtol=1e-5, atol=1e-6)
        for a, b in zip(grads_a, grads_b):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    else:  # bf16 keeps ~3 digits: errors relative to the largest value; measured <= 0.013 (logits), 0.025 (grads),
        # and >= 0.12 on the gradients of the prefix configuration with the scale off by 10% or the mask ignored.
        assert _relative_error(logits_a, logits_b) <= 0.03
        assert max(_relative_error(a, b) for a, b in zip(grads_a, grads_b)) <= 0.06


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matmul_attention_keeps_a_fully_masked_query_row_finite(dtype):
    """A query that may attend to no key gets finite output (as with SDPA), not NaN."""
    g = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 4, 5, 8, generator=g).mul(30).to(dtype) for _ in range(3))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[0, :, 2] = False  # query 2 of the first example sees nothing
    out, _ = _matmul_attention(torch.nn.Module(), query, key, value, mask)
    assert out.shape == (2, 5, 4, 8) and torch.isfinite(out).all()


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return ((a - b).abs().max() / b.abs().max()).item()


def test_untrained_prefix_changes_the_output(family):
    """Prefix tuning cannot start as the identity: the test that would catch a no-op prefix."""
    batch = tiny_batch()
    base = _outputs(make_tiny(family), batch).logits
    peft = _outputs(inject(make_tiny(family), PeftConfig(prefix_length=4, layers=ALL)), batch).logits
    assert not torch.allclose(peft, base)


@pytest.mark.parametrize("config", EVERY_MODULE, ids=PeftConfig.describe)
def test_hidden_states_below_lowest_selected_layer_are_identical(family, config):
    batch = tiny_batch()
    lowest = config.active_layers[0]
    model = inject(make_tiny(family), config)
    with torch.no_grad():  # make every module do something
        for p in model.autopeft.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    base, peft = _outputs(_base_model(family), batch), _outputs(model, batch)
    # hidden_states[0] is the embedding output, hidden_states[i + 1] the output of layer i.
    for i in range(lowest + 1):
        assert torch.equal(peft.hidden_states[i], base.hidden_states[i]), f"hidden state {i} differs"
    assert not torch.allclose(peft.hidden_states[lowest + 1], base.hidden_states[lowest + 1])


@pytest.mark.parametrize("config", EVERY_MODULE, ids=PeftConfig.describe)
def test_one_step_changes_only_module_and_head_parameters(family, config):
    model = inject(make_tiny(family), config)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(**tiny_batch(), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    allowed = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= allowed
    assert all(n.startswith("autopeft.") or "classifier" in n or "score" in n or "pooler" in n for n in allowed)
    assert any(n.startswith("autopeft.") for n in changed), "no module parameter was trained"
    assert any(not n.startswith("autopeft.") for n in changed), "the head was not trained"


def test_analytic_count_matches_counted_parameters(family):
    rng = np.random.default_rng(0)
    space = SearchSpace(N_LAYERS, (0, 1, 4, 16), (0, 2, 8, 32), (0, 1, 3, 10), lora_rank=(0, 1, 4))
    for _ in range(20):
        config = space.sample(rng)
        model = make_tiny(family)
        spec = model_spec(model)
        inject(model, config)
        fold(model)  # the count is of what is kept: folded prefix vectors, not the MLP
        assert trainable_params(model) == spec.trainable_params(config), config.describe()


def test_prefix_respects_padding(family):
    """An example's logits do not depend on the padding of its batch."""
    config = PeftConfig(prefix_length=3, serial_adapter=4, layers=ALL)
    model = inject(make_tiny(family), config)
    with torch.no_grad():
        for p in model.autopeft.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    fold(model)
    batch = tiny_batch()
    n = int(batch["attention_mask"][0].sum())
    with torch.no_grad():
        padded = model(**batch).logits[0]
        alone = model(input_ids=batch["input_ids"][:1, :n], attention_mask=batch["attention_mask"][:1, :n]).logits[0]
    torch.testing.assert_close(padded, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", EVERY_MODULE[2:], ids=PeftConfig.describe)
def test_folding_keeps_the_function(family, config):
    model = inject(make_tiny(family), config)
    batch = tiny_batch()
    before = _outputs(model, batch).logits
    fold(model)
    torch.testing.assert_close(_outputs(model, batch).logits, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", EVERY_MODULE, ids=PeftConfig.describe)
def test_save_and_reload_gives_identical_predictions(family, config, tmp_path):
    model = inject(make_tiny(family), config)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.2)
    fold(model)
    batch = tiny_batch()
    expected = _outputs(model, batch).logits
    save_peft(model, config, tmp_path)
    reloaded = load_peft(make_tiny(family), tmp_path)
    assert torch.equal(_outputs(reloaded, batch).logits, expected)


def test_unsupported_architecture_names_the_supported_ones():
    model = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(UserError, match="supported:.*bert.*llama"):
        inject(model, PeftConfig(serial_adapter=2, layers=(1, 1)))


def test_wrong_layer_count_is_refused():
    with pytest.raises(UserError, match="3 layers"):
        inject(make_tiny("bert"), PeftConfig(serial_adapter=2, layers=(1, 1)))


def test_no_module_on_is_refused():
    with pytest.raises(UserError, match="no module on"):
        inject(make_tiny("bert"), PeftConfig(layers=ALL))
