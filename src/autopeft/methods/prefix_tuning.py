"""Prefix tuning (PT): learned keys and values prepended in each chosen layer's attention
(Li & Liang 2021), trained through one reparametrisation MLP shared by the layers and folded
into plain vectors afterwards. The attention functions that read them are in `modules.inject`."""

from __future__ import annotations

import types
from typing import Any

from autopeft.methods.base import Export, Injection, PeftMethod


class PrefixTuning(PeftMethod):
    key = "prefix_length"
    label = "PT"
    name = "prefix tuning"

    def params_per_layer(self, spec, size: int) -> int:
        return 2 * size * spec.kv_dim  # keys and values, once folded

    def prepare(self, injection: Injection, size: int, active_layers: tuple[int, ...]) -> None:
        from autopeft.modules.arch import get_submodule
        from autopeft.modules.layers import PrefixEncoder

        first, arch = injection.layers[0], injection.arch
        attention = get_submodule(first, arch.attention)
        head_dim = getattr(attention, "head_dim", None) or attention.attention_head_size
        kv_dim = get_submodule(first, arch.value).out_features
        injection.modules["prefix"] = PrefixEncoder(len(active_layers), size, kv_dim // head_dim, head_dim,
                                                    injection.hidden_size, folded=injection.folded)

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        from autopeft.modules.arch import get_submodule

        prefix = injection.modules["prefix"]
        attention = get_submodule(injection.layers[index], injection.arch.attention)
        # A plain function attribute, not a submodule: the encoder is stored once, under autopeft.
        object.__setattr__(attention, "_autopeft_prefix", lambda: prefix.layer_prefix(slot))
        if injection.arch.prefix_forward is not None:  # a family outside transformers' AttentionInterface
            attention.forward = types.MethodType(injection.arch.prefix_forward, attention)

    def fold(self, modules: Any) -> None:
        if "prefix" in modules:
            modules["prefix"].fold()
            # The folded vectors are new Parameters: keep them trainable like the MLP was.
            modules["prefix"].prefix.requires_grad = True

    adapters_location = "prefix"

    def to_adapters(self, export: Export, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        # `adapters`' flat prefix: one vector, viewed as (length, active layers x {key, value}, heads, head dim).
        prefix = export.modules["prefix"].prefix  # (active layers, 2, length, kv_dim)
        flat = prefix.detach().permute(2, 0, 1, 3).reshape(-1)
        config = {"architecture": "prefix_tuning", "encoder_prefix": True, "cross_prefix": True, "flat": True,
                  "prefix_length": size, "dropout": 0.0, "use_gating": False, "leave_out": export.leave_out}
        pool = f"prefix_tuning.prefix_tunings.{export.name}.self_prefix.control_trans"
        # `adapters` saves the one shared tensor under the model's name and every layer's (active or not)
        keys = [f"{export.base_prefix}.{pool}"] + [
            f"{export.key(i, export.arch.attention)}.prefix_tuning.pool.{pool}" for i in range(export.n_layers)]
        return config, {key: flat for key in keys}
