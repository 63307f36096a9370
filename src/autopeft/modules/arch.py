"""Where each architecture keeps the parts the PEFT modules attach to.

One small map per model family replaces a copy of the injection logic per model. Paths
are attribute paths: `layers` from the backbone (`model.base_model`), the rest from one
transformer layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from autopeft.errors import UserError


@dataclass(frozen=True)
class ArchMap:
    layers: str  # ModuleList of transformer layers, from the backbone
    ffn_in: str  # module whose *input* is the FFN input h (after attention + its norm)
    ffn_out: str  # module whose *output* is the FFN output, before the block's residual/norm
    attention: str  # module handed to the attention function (one per layer)
    query: str  # query projection (nn.Linear)
    value: str  # value projection (nn.Linear)
    trained_with_head: tuple[str, ...] = ()  # backbone parts trained as part of the task head
    # False: the family computes attention itself, not through transformers' AttentionInterface; it
    # loads with eager attention, and a layer with a prefix gets `prefix_forward` as its attention's forward.
    attention_interface: bool = True
    prefix_forward: Callable[..., tuple] | None = None
    layer_returns_tuple: bool = False  # a transformer layer returns (hidden_states, ...), not the tensor


_BERT = ArchMap(
    layers="encoder.layer",
    ffn_in="intermediate",
    ffn_out="output.dense",
    attention="attention.self",
    query="attention.self.query",
    value="attention.self.value",
    trained_with_head=("pooler",),
)
_LLAMA = ArchMap(
    layers="layers",
    ffn_in="mlp",
    ffn_out="mlp",
    attention="self_attn",
    query="self_attn.q_proj",
    value="self_attn.v_proj",
)

def _mpnet_prefix_forward(module: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          position_bias: torch.Tensor | None = None, output_attentions: bool = False,
                          **_kwargs) -> tuple[torch.Tensor]:
    """`MPNetSelfAttention.forward` through autopeft's prefix-aware attention. hidden_states: (batch, T, hidden).

    MPNet adds a relative position bias (batch, heads, T, T) to the scores. A prefix key has no
    position, so it gets none (0), and it is never masked: the bias joins the additive padding mask,
    which the prefix extends with zeros (`inject._mask_with_prefix`). Attention weights are not returned.
    """
    from autopeft.modules.inject import prefix_matmul_attention

    shape = (*hidden_states.shape[:-1], -1, module.attention_head_size)
    q, k, v = (p(hidden_states).view(shape).transpose(1, 2) for p in (module.q, module.k, module.v))  # (b, h, T, d)
    bias = position_bias
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            attention_mask = torch.zeros(attention_mask.shape, dtype=q.dtype, device=q.device).masked_fill_(
                ~attention_mask, torch.finfo(q.dtype).min)
        bias = attention_mask if bias is None else bias + attention_mask
    out, _ = prefix_matmul_attention(module, q, k, v, bias, dropout=module.dropout.p if module.training else 0.0)
    return (module.o(out.reshape(*hidden_states.shape[:-1], -1)),)


_MPNET = ArchMap(
    layers="encoder.layer",
    ffn_in="intermediate",
    ffn_out="output.dense",
    attention="attention.attn",
    query="attention.attn.q",
    value="attention.attn.v",
    attention_interface=False,
    prefix_forward=_mpnet_prefix_forward,
    layer_returns_tuple=True,
)

ARCH_MAPS: dict[str, ArchMap] = {
    "bert": _BERT,
    "roberta": _BERT,  # RoBERTa's classification head does not use the pooler; it is absent then
    "xlm-roberta": _BERT,
    "mpnet": _MPNET,  # its classification head reads the first token through its own dense layer, not a pooler
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
}


def arch_map_for(model: nn.Module) -> ArchMap:
    """The map for `model`'s family, or a UserError naming the supported ones."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCH_MAPS:
        raise UserError(
            f"model type '{model_type}' has no autopeft architecture map; supported: {sorted(ARCH_MAPS)}. "
            "Use a model of a supported family, or add an ArchMap for it in autopeft/modules/arch.py"
        )
    return ARCH_MAPS[model_type]


def get_submodule(root: nn.Module, path: str) -> nn.Module | None:
    """`root.a.b.c` for path 'a.b.c', or None when a part is missing (e.g. no pooler)."""
    module = root
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module
