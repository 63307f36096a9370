"""Inject a PeftConfig into a Hugging Face model, freeze the rest, fold, save and reload.

Each method (`autopeft.methods`) hooks its modules into the layers named by the family's
`ArchMap`: adapters and LoRA by forward hooks, prefix tuning through the attention functions
registered here with transformers' AttentionInterface, which prepend a layer's learned
keys/values and extend the mask so every query sees them. All modules live under
`model.autopeft` (an nn.ModuleDict), so they are in its state_dict.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from autopeft.errors import UserError
from autopeft.methods import METHODS, Injection
from autopeft.modules.arch import ArchMap, arch_map_for, get_submodule
from autopeft.space import ModelSpec, PeftConfig

#: The attention implementations autopeft registers with transformers (both prefix-aware):
#: "matmul" (the default, fastest for training on CPU) and "sdpa" (torch's fused kernels).
ATTENTIONS = {"matmul": "autopeft_matmul", "sdpa": "autopeft_sdpa"}
WEIGHTS_FILE = "peft_weights.safetensors"
CONFIG_FILE = "peft_config.json"


def _matmul_attention(module: nn.Module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, is_causal: bool | None = None, **_kwargs):
    """Attention as two matmuls and a softmax; shapes and arguments as `sdpa_attention_forward`.

    Why not SDPA: on CPU its math kernel (the one usable for training, see training.py) adds a
    "safe softmax" (isneginf, all, where over every (batch, heads, q, kv) score tensor) and a
    bool -> float mask conversion per layer; this plain version trains faster
    (benchmarks/attention_speed.py; the figures are in docs/lab-notes/benchmarks-log.md).
    Returns ((batch, q_len, heads, head_dim), None).
    """
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    q_len, kv_len = query.shape[2], key.shape[2]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # Every pass over the (batch, heads, q_len, kv_len) scores costs about as much as a matmul on
    # CPU, so: the query is scaled (not the scores); a bool mask is added in place as a bias of
    # 0 / finfo.min (masked_fill would need a masked copy of the gradient; finfo.min, not -inf,
    # keeps a fully masked row finite, as SDPA does); the softmax runs in the scores'
    # dtype (its kernels accumulate bf16/fp16 in fp32; an fp32 softmax and a cast back would add two
    # casts of the scores forward and two backward).
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # (batch, heads, q_len, kv_len)
    causal = getattr(module, "is_causal", False) if is_causal is None else is_causal
    if attention_mask is None and causal and q_len > 1:
        attention_mask = _unpadded_mask(q_len, kv_len, causal, query.device)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            bias = torch.zeros(attention_mask.shape, dtype=scores.dtype, device=scores.device)
            scores.add_(bias.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _with_prefix(attend):
    """An attention function that first prepends the module's prefix keys/values, if any.

    query: (batch, heads, q_len, head_dim); key/value: (batch, kv_heads, kv_len, head_dim);
    attention_mask: None, or (batch, 1, q_len, kv_len) bool (True = attend) or additive float.
    """

    def attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        prefix_fn = getattr(module, "_autopeft_prefix", None)
        if prefix_fn is not None:
            prefix_k, prefix_v = prefix_fn()  # (kv_heads, P, head_dim) each
            batch, n_prefix = key.shape[0], prefix_k.shape[1]
            key = torch.cat([prefix_k.to(key.dtype).expand(batch, -1, -1, -1), key], dim=2)
            value = torch.cat([prefix_v.to(value.dtype).expand(batch, -1, -1, -1), value], dim=2)
            attention_mask = _mask_with_prefix(attention_mask, query, key.shape[2] - n_prefix, n_prefix, module)
        return attend(module, query, key, value, attention_mask, **kwargs)

    return attention


def _unpadded_mask(q_len: int, kv_len: int, causal: bool, device: torch.device) -> torch.Tensor:
    """The (q_len, kv_len) bool mask of a batch without padding, the one SDPA leaves implicit:
    all True, or lower-triangular (the last query sees every key) when causal and q_len > 1."""
    mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    return mask.tril(diagonal=kv_len - q_len) if causal and q_len > 1 else mask


def _mask_with_prefix(mask, query: torch.Tensor, kv_len: int, n_prefix: int, module: nn.Module) -> torch.Tensor:
    """Extend an attention mask by `n_prefix` always-visible key positions on the left."""
    batch, q_len = query.shape[0], query.shape[2]
    if mask is None:  # SDPA skipped the mask: no padding; causal only if the module is
        mask = _unpadded_mask(q_len, kv_len, getattr(module, "is_causal", False), query.device)
        mask = mask.expand(batch, 1, q_len, kv_len)
    visible = torch.ones if mask.dtype == torch.bool else torch.zeros
    pad = visible(mask.shape[0], mask.shape[1], mask.shape[2], n_prefix, dtype=mask.dtype, device=mask.device)
    return torch.cat([pad, mask], dim=-1)


prefix_matmul_attention = _with_prefix(_matmul_attention)  # for families outside AttentionInterface


def set_attention(model: nn.Module, attention: str = "matmul") -> nn.Module:
    """Give `model` autopeft's prefix-aware `attention` ("matmul" | "sdpa"). A family that computes attention
    itself (`ArchMap.attention_interface` False) keeps its own, prefix layers excepted (`ArchMap.prefix_forward`)."""
    if arch_map_for(model).attention_interface:
        model.set_attn_implementation(attention_implementation(attention))
    return model


@functools.cache
def attention_implementation(attention: str) -> str:
    """The transformers name of autopeft's `attention` ("matmul" | "sdpa"), registered on first use."""
    name, attend = ATTENTIONS[attention], {"matmul": _matmul_attention, "sdpa": sdpa_attention_forward}[attention]
    AttentionInterface.register(name, _with_prefix(attend))
    AttentionMaskInterface.register(name, sdpa_mask)  # bool masks, or None when nothing is masked
    return name


def _head_prefixes(model: nn.Module, arch: ArchMap) -> tuple[str, ...]:
    """Parameter-name prefixes of the task head: everything outside the backbone, plus
    backbone parts the map trains with the head (BERT's pooler)."""
    base = model.base_model_prefix
    return tuple(f"{base}.{p}." for p in arch.trained_with_head)


def _is_head_param(model: nn.Module, arch: ArchMap, name: str) -> bool:
    base = model.base_model_prefix
    return not name.startswith(f"{base}.") or name.startswith(_head_prefixes(model, arch))


def model_spec(model: nn.Module) -> ModelSpec:
    """Sizes the analytic parameter count needs, read off a (not yet injected) model."""
    arch = arch_map_for(model)
    first_layer = get_submodule(model.base_model, arch.layers)[0]
    head = sum(
        p.numel() for n, p in model.named_parameters()
        if _is_head_param(model, arch, n) and not n.startswith("autopeft.")
    )
    return ModelSpec(
        model_type=model.config.model_type,
        n_layers=len(get_submodule(model.base_model, arch.layers)),
        hidden_size=model.config.hidden_size,
        q_dim=get_submodule(first_layer, arch.query).out_features,
        kv_dim=get_submodule(first_layer, arch.value).out_features,
        backbone_params=sum(p.numel() for p in model.base_model.parameters()),
        head_params=head,
    )


def inject(model: nn.Module, config: PeftConfig, folded_prefix: bool = False, seed: int | None = None) -> nn.Module:
    """Add `config`'s modules to `model` in place, freeze everything but modules and head.

    Build a fresh model per configuration: hooks are not removed. `folded_prefix` creates
    the prefix as plain vectors (used when loading trained weights). Returns `model`.
    """
    arch = arch_map_for(model)
    layers = get_submodule(model.base_model, arch.layers)
    if len(config.layers) != len(layers):
        raise UserError(
            f"configuration has {len(config.layers)} layer bits but the model has {len(layers)} layers; "
            f"give 'layers' exactly {len(layers)} entries"
        )
    config.check_valid()
    if hasattr(model, "autopeft"):
        raise ValueError("model already has autopeft modules; load a fresh base model per configuration")
    if seed is not None:
        torch.manual_seed(seed)
    injection = Injection(model, arch, layers, model.config.hidden_size, nn.ModuleDict(), folded=folded_prefix)
    methods = [(METHODS[key], config.size(key)) for key in config.modules_on]
    for method, size in methods:
        method.prepare(injection, size, config.active_layers)
    for slot, index in enumerate(config.active_layers):  # layer by layer: the initial weights follow the seed
        for method, size in methods:
            method.attach(injection, index, slot, size)
    model.autopeft = injection.modules
    set_attention(model)
    for name, param in model.named_parameters():
        param.requires_grad = name.startswith("autopeft.") or _is_head_param(model, arch, name)
    return model


def full_finetune(model: nn.Module) -> nn.Module:
    """Make every parameter trainable (the full fine-tuning baseline)."""
    for param in model.parameters():
        param.requires_grad = True
    return model


def trainable_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def fold(model: nn.Module) -> None:
    """Replace training-only parametrisations (the prefix MLP) by what is kept; no-op without them."""
    modules = getattr(model, "autopeft", {})
    for method in METHODS.values():
        method.fold(modules)


def save_peft(model: nn.Module, config: PeftConfig, out_dir: str | Path, info: dict[str, Any] | None = None) -> Path:
    """Write the trained modules and head (safetensors) and the configuration (JSON).

    The prefix is folded first, so what is saved is what the parameter count counts.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fold(model)
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(state, str(out_dir / WEIGHTS_FILE))
    (out_dir / CONFIG_FILE).write_text(json.dumps({"config": config.to_dict(), **(info or {})}, indent=2))
    return out_dir


def read_saved_config(saved_dir: str | Path) -> tuple[PeftConfig, dict[str, Any]]:
    """The configuration and metadata saved by `save_peft`."""
    path = Path(saved_dir) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{saved_dir} holds no trained configuration ({CONFIG_FILE} missing); "
                        "pass the --out folder of `autopeft train`")
    data = json.loads(path.read_text())
    return PeftConfig.from_dict(data["config"]), data


def load_peft(model: nn.Module, saved_dir: str | Path) -> nn.Module:
    """Inject the saved configuration into a fresh base `model` and load its trained weights."""
    config, _ = read_saved_config(saved_dir)
    inject(model, config, folded_prefix=True)
    state = load_file(str(Path(saved_dir) / WEIGHTS_FILE))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"saved weights in {saved_dir} do not match the model: "
                        f"missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(state, strict=False)
    return model
