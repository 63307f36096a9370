"""The PEFT building blocks: bottleneck adapters, LoRA and prefix tuning.

Every block whose output is added to the backbone starts with a zero up-projection, so
an untrained block leaves the base model's function unchanged (prefix tuning cannot:
extra attention keys always change the softmax).
"""

from __future__ import annotations

import torch
from torch import nn


class BottleneckAdapter(nn.Module):
    """`scale * up(relu(down(x)))` with `up` zero-initialised.

    x: (..., hidden) -> (..., hidden). The residual is added by the caller, which
    knows whether the adapter is serial (x + adapter(x)) or parallel (y + adapter(h)).
    """

    def __init__(self, hidden_size: int, bottleneck: int, scale: float = 1.0) -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(torch.relu(self.down(x)))


class LoRA(nn.Module):
    """Low-rank update `scaling * B(A(x))` for a frozen linear layer; B starts at zero.

    x: (..., in_features) -> (..., out_features). scaling = alpha / rank with alpha = 2 * rank.
    """

    def __init__(self, in_features: int, out_features: int, rank: int, scaling: float = 2.0) -> None:
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)
        self.B = nn.Linear(rank, out_features, bias=False)
        nn.init.zeros_(self.B.weight)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.B(self.A(x))


class PrefixEncoder(nn.Module):
    """Learned key/value prefixes for a set of layers, trained through a reparametrisation MLP.

    As in Li & Liang (2021) and the AutoPEFT reference: a (length, hidden) embedding goes
    through Linear(hidden, mlp_hidden) -> tanh -> Linear(mlp_hidden, n_layers * 2 * kv_dim),
    shared by the selected layers. `fold()` replaces the MLP by the vectors it produces, which
    is all that is kept after training (and all the parameter count counts).
    """

    def __init__(
        self,
        n_layers: int,
        length: int,
        kv_heads: int,
        head_dim: int,
        hidden_size: int,
        mlp_hidden: int = 512,
        folded: bool = False,
    ) -> None:
        super().__init__()
        self.n_layers, self.length, self.kv_heads, self.head_dim = n_layers, length, kv_heads, head_dim
        kv_dim = kv_heads * head_dim
        if folded:
            self.prefix = nn.Parameter(torch.zeros(n_layers, 2, length, kv_dim))
        else:
            self.embedding = nn.Parameter(torch.randn(length, hidden_size) * 0.02)
            self.mlp_in = nn.Linear(hidden_size, mlp_hidden)
            self.mlp_out = nn.Linear(mlp_hidden, n_layers * 2 * kv_dim)

    @property
    def is_folded(self) -> bool:
        return hasattr(self, "prefix")

    def layer_prefix(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the `slot`-th selected layer, each (kv_heads, length, head_dim)."""
        if self.is_folded:
            kv = self.prefix[slot]  # (2, length, kv_dim)
        else:
            # Only this layer's rows of the output projection: the MLP is not run once per layer in full.
            kv_dim = self.kv_heads * self.head_dim
            rows = slice(slot * 2 * kv_dim, (slot + 1) * 2 * kv_dim)
            hidden = torch.tanh(self.mlp_in(self.embedding))  # (length, mlp_hidden)
            kv = nn.functional.linear(hidden, self.mlp_out.weight[rows], self.mlp_out.bias[rows])
            kv = kv.view(self.length, 2, kv_dim).transpose(0, 1)  # (2, length, kv_dim)
        kv = kv.view(2, self.length, self.kv_heads, self.head_dim).transpose(1, 2)
        return kv[0], kv[1]

    @torch.no_grad()
    def fold(self) -> None:
        """Replace the reparametrisation MLP by the prefix vectors it computes."""
        if self.is_folded:
            return
        kv_dim = self.kv_heads * self.head_dim
        hidden = torch.tanh(self.mlp_in(self.embedding))
        vectors = self.mlp_out(hidden).view(self.length, self.n_layers, 2, kv_dim).permute(1, 2, 0, 3)
        del self.embedding, self.mlp_in, self.mlp_out
        self.prefix = nn.Parameter(vectors.contiguous())
