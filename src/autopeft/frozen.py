"""Compute the layers below the lowest modified layer once, and reuse their output.

Layers below the lowest layer with a PEFT module are frozen and unmodified, so their
output (the hidden states entering layer k) depends only on the input tokens. They run
in eval mode (no dropout) in every code path, which makes the cached states exact: a
trial with the cache gives the same result as without it, up to float rounding.

While a `SkipLowerLayers` context is active, layers 0..k-1 are replaced by pass-throughs
and a pre-hook on layer k swaps its input for the cached states of the batch's examples.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from autopeft.modules.arch import arch_map_for, get_submodule


class _Passthrough(nn.Module):
    """Stands in for a skipped layer: returns its input hidden states unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class _Stop(Exception):
    pass


def _layers(model: nn.Module) -> nn.ModuleList:
    return get_submodule(model.base_model, arch_map_for(model).layers)


def set_lower_layers_eval(model: nn.Module, k: int) -> None:
    """Put the embeddings and layers 0..k-1 in eval mode (call after model.train())."""
    if k <= 0:
        return
    model.base_model.get_input_embeddings().eval()
    embeddings = getattr(model.base_model, "embeddings", None)
    if embeddings is not None:
        embeddings.eval()
    for layer in _layers(model)[:k]:
        layer.eval()


@torch.no_grad()
def lower_states(model: nn.Module, k: int, batches: Iterator[dict[str, torch.Tensor]], n: int) -> list[torch.Tensor]:
    """Hidden states entering layer k for each of n examples: list of (len_i, hidden).

    `batches` yields model inputs plus `index` (batch,) and the attention mask; padding
    positions are dropped from the stored states.
    """
    layer_k = _layers(model)[k]
    captured: dict[str, torch.Tensor] = {}

    def grab(_m: nn.Module, args: tuple) -> None:
        captured["h"] = args[0]
        raise _Stop

    states: list[torch.Tensor | None] = [None] * n
    was_training = model.training
    model.eval()
    handle = layer_k.register_forward_pre_hook(grab)
    try:
        for batch in batches:
            try:
                model(**{k_: v for k_, v in batch.items() if k_ not in ("labels", "index")})
            except _Stop:
                pass
            lengths = batch["attention_mask"].sum(1).tolist()
            for row, i in enumerate(batch["index"].tolist()):
                # Right padding: the real tokens come first.
                states[i] = captured["h"][row, : lengths[row]].clone()
    finally:
        handle.remove()
        model.train(was_training)
    return states  # type: ignore[return-value]


@contextmanager
def skip_lower_layers(model: nn.Module, k: int, states: list[torch.Tensor]):
    """Within the context, layers < k are skipped; call `feed(index)` before each forward.

    Yields `feed`: feed(index (batch,), width) selects the cached states of those examples,
    right-padded to `width`, as the input of layer k.
    """
    layers = _layers(model)
    originals = [layers[i] for i in range(k)]
    current: dict[str, torch.Tensor] = {}

    def feed(index: torch.Tensor, width: int) -> None:
        rows = [states[i] for i in index.tolist()]
        padded = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
        for r, h in enumerate(rows):
            padded[r, : h.shape[0]] = h
        current["h"] = padded

    def swap_input(_m: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (current["h"].to(args[0].dtype), *args[1:]), kwargs

    for i in range(k):
        layers[i] = _Passthrough()
    handle = layers[k].register_forward_pre_hook(swap_input, with_kwargs=True)
    try:
        yield feed
    finally:
        handle.remove()
        for i, layer in enumerate(originals):
            layers[i] = layer


class StatesCache:
    """An LRU of lower-layer states shared across trials, keyed by (model, k, tokens).

    Bounded by `max_bytes` (default 2 GiB); the least recently used entry goes first.
    """

    def __init__(self, max_bytes: int = 2 << 30) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[list[torch.Tensor], int]] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(model_name: str, k: int, input_ids: list[list[int]]) -> tuple:
        digest = hashlib.sha1(np.concatenate([np.asarray(ids, dtype=np.int64) for ids in input_ids] + [
            np.asarray([len(ids) for ids in input_ids], dtype=np.int64)]).tobytes()).hexdigest()
        return (model_name, k, digest)

    def get(self, key: tuple) -> list[torch.Tensor] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: tuple, states: list[torch.Tensor]) -> None:
        size = sum(s.numel() * s.element_size() for s in states)
        self._entries[key] = (states, size)
        while sum(e[1] for e in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
            self._entries.popitem(last=False)


SHARED_CACHE = StatesCache()
