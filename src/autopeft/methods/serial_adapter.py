"""Serial adapter (SA): a bottleneck after the FFN, `y <- y + SA(y)`, before the block's
residual and norm (the Pfeiffer placement; Houlsby et al. 2019, Pfeiffer et al. 2021)."""

from __future__ import annotations

from typing import Any

from autopeft.errors import UserError
from autopeft.methods.base import Export, Injection, PeftMethod


def bottleneck_params(hidden_size: int, bottleneck: int) -> int:
    """Down (h*d + d) and up (d*h + h) projections."""
    return 2 * hidden_size * bottleneck + bottleneck + hidden_size


def bottleneck_to_adapters(export: Export, size: int, prefix: str, parallel: bool,
                           scale: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our bottlenecks `prefix`_i as an `adapters` BnConfig at the FFN output: relu, no extra norms, the
    residual taken before the layer's norm (serial), or the FFN input as the adapter's input (parallel)."""
    reduction = export.hidden_size / size
    if int(export.hidden_size // reduction) != size:  # how `adapters` derives the bottleneck from the factor
        raise UserError(f"a bottleneck of {size} cannot be written as an `adapters` reduction factor of hidden "
                        f"size {export.hidden_size}; only sizes that divide it can be exported")
    config = {"mh_adapter": False, "output_adapter": True, "reduction_factor": reduction, "non_linearity": "relu",
              "original_ln_before": False, "original_ln_after": True, "ln_before": False, "ln_after": False,
              "residual_before_ln": True, "adapter_residual_before_ln": False, "is_parallel": parallel,
              "scaling": scale, "use_gating": False, "dropout": 0.0, "leave_out": export.leave_out}
    site = export.arch.ffn_out.rsplit(".", 1)[0]  # the block that holds the FFN output projection and the norm
    weights = {}
    for i in export.active_layers:
        adapter, key = export.modules[f"{prefix}_{i}"], f"{export.key(i, site)}.adapters.{export.name}"
        for ours, theirs in (("down", "adapter_down.0"), ("up", "adapter_up")):
            linear = getattr(adapter, ours)
            weights |= {f"{key}.{theirs}.weight": linear.weight, f"{key}.{theirs}.bias": linear.bias}
    return config, weights


class SerialAdapter(PeftMethod):
    key = "serial_adapter"
    label = "SA"
    name = "serial adapter"

    def params_per_layer(self, spec, size: int) -> int:
        return bottleneck_params(spec.hidden_size, size)

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        from autopeft.modules.arch import get_submodule
        from autopeft.modules.layers import BottleneckAdapter

        adapter = BottleneckAdapter(injection.hidden_size, size)
        injection.modules[f"sa_{index}"] = adapter
        ffn_out = get_submodule(injection.layers[index], injection.arch.ffn_out)
        ffn_out.register_forward_hook(lambda _m, _args, out: out + adapter(out))

    adapters_location = "output"

    def to_adapters(self, export: Export, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        return bottleneck_to_adapters(export, size, "sa", parallel=False, scale=1.0)
