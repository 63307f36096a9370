"""A toy PEFT method for tests/test_methods.py: a learned per-channel scale of each FFN output
(in the spirit of IA3). Written as a user would add a method: this one module, plus one line
that registers it."""

from __future__ import annotations

import torch
from torch import nn

from autopeft.methods import Injection, PeftMethod
from autopeft.modules.arch import get_submodule


class ChannelScale(nn.Module):
    """`x * scale`, the scale starting at 1 (so an untrained module changes nothing). x: (..., hidden)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FfnScale(PeftMethod):
    key = "ffn_scale"
    label = "Scale"
    name = "channel scale"

    def default_sizes(self, hidden_size: int) -> tuple[int, ...]:
        return (0, 1)  # off or on: the scale has no size of its own

    def baseline_size(self, hidden_size: int) -> int:
        return 1

    def params_per_layer(self, spec, size: int) -> int:
        return spec.hidden_size

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        scale = ChannelScale(injection.hidden_size)
        injection.modules[f"scale_{index}"] = scale
        ffn_out = get_submodule(injection.layers[index], injection.arch.ffn_out)
        ffn_out.register_forward_hook(lambda _m, _args, out: scale(out))
