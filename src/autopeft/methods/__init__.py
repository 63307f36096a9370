"""The PEFT methods autopeft searches over, one module each, and the registry that lists them.

A method (a `PeftMethod`) owns its size key in configurations and search spaces, its parameter
count, its injection into a layer, its baseline size and its default sizes. To add one, write a
module with a `PeftMethod` subclass and add it to `METHODS` below (or `register` it at run
time); configurations, spaces, samplers, parameter counts, baselines and reports then know it.
Its torch building blocks are imported only when a model is built (see `modules/layers.py`),
so reading configurations stays free of torch.
"""

from __future__ import annotations

from autopeft.methods.base import Injection, PeftMethod, default_sizes
from autopeft.methods.lora import LoRA
from autopeft.methods.parallel_adapter import ParallelAdapter
from autopeft.methods.prefix_tuning import PrefixTuning
from autopeft.methods.serial_adapter import SerialAdapter

#: Size key -> method, in the order of configuration keys, encodings and module creation.
METHODS: dict[str, PeftMethod] = {}


def register(method: PeftMethod) -> PeftMethod:
    """Add `method` to the registry (its key must be new, and not a configuration or space key)."""
    if method.key in ("layers", "fixed_layers", "n_layers"):
        raise ValueError(f"{method.key!r} is a configuration or search space key; give the method another key")
    if method.key in METHODS:
        raise ValueError(f"a PEFT method with key {method.key!r} exists already")
    METHODS[method.key] = method
    return method


for _method in (SerialAdapter(), ParallelAdapter(), PrefixTuning(), LoRA()):
    register(_method)


def size_keys() -> tuple[str, ...]:
    """The size keys of the registered methods, in registry order."""
    return tuple(METHODS)


__all__ = ["METHODS", "Injection", "PeftMethod", "default_sizes", "register", "size_keys"]
