"""Serial adapter (SA): a bottleneck after the FFN, `y <- y + SA(y)`, before the block's
residual and norm (the Pfeiffer placement; Houlsby et al. 2019, Pfeiffer et al. 2021)."""

from __future__ import annotations

from autopeft.methods.base import Injection, PeftMethod


def bottleneck_params(hidden_size: int, bottleneck: int) -> int:
    """Down (h*d + d) and up (d*h + h) projections."""
    return 2 * hidden_size * bottleneck + bottleneck + hidden_size


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
