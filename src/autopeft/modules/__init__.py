"""PEFT modules (SA, PA, PT, LoRA) and their injection into Hugging Face models."""

from autopeft.modules.arch import ARCH_MAPS, ArchMap, arch_map_for
from autopeft.modules.inject import (
    ATTENTIONS,
    attention_implementation,
    fold,
    full_finetune,
    inject,
    load_peft,
    model_spec,
    save_peft,
    set_attention,
    trainable_params,
)

__all__ = [
    "ARCH_MAPS", "ATTENTIONS", "ArchMap", "arch_map_for", "attention_implementation", "fold", "full_finetune", "inject",
    "load_peft", "model_spec", "save_peft", "set_attention", "trainable_params",
]
