"""Parallel adapter (PA): a bottleneck beside the FFN, from its input h, `y <- y + 4 * PA(h)`
(He et al. 2022; the scale is the AutoPEFT reference implementation's)."""

from __future__ import annotations

from typing import Any

from autopeft.methods.base import Export, Injection, PeftMethod
from autopeft.methods.serial_adapter import bottleneck_params, bottleneck_to_adapters

PARALLEL_SCALE = 4.0


class ParallelAdapter(PeftMethod):
    key = "parallel_adapter"
    label = "PA"
    name = "parallel adapter"

    def params_per_layer(self, spec, size: int) -> int:
        return bottleneck_params(spec.hidden_size, size)

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        from autopeft.modules.arch import get_submodule
        from autopeft.modules.layers import BottleneckAdapter

        adapter = BottleneckAdapter(injection.hidden_size, size, PARALLEL_SCALE)
        injection.modules[f"pa_{index}"] = adapter
        layer, arch = injection.layers[index], injection.arch
        stash = {}  # the FFN input of the current forward pass
        get_submodule(layer, arch.ffn_in).register_forward_pre_hook(lambda _m, args: stash.__setitem__("h", args[0]))
        get_submodule(layer, arch.ffn_out).register_forward_hook(lambda _m, _args, out: out + adapter(stash.pop("h")))

    adapters_location = "output"

    def to_adapters(self, export: Export, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return bottleneck_to_adapters(export, size, "pa", parallel=True, scale=PARALLEL_SCALE)
