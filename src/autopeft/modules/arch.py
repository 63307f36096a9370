"""Where each architecture keeps the parts the PEFT modules attach to.

One small map per model family replaces a copy of the injection logic per model. Paths
are attribute paths: `layers` from the backbone (`model.base_model`), the rest from one
transformer layer.
"""

from __future__ import annotations

from dataclasses import dataclass

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

ARCH_MAPS: dict[str, ArchMap] = {
    "bert": _BERT,
    "roberta": _BERT,  # RoBERTa's classification head does not use the pooler; it is absent then
    "xlm-roberta": _BERT,
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
