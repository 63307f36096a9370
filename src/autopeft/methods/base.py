"""What a PEFT method provides to autopeft, and the sizes its search space defaults to."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from torch import nn

    from autopeft.modules.arch import ArchMap
    from autopeft.space import ModelSpec


def default_sizes(hidden_size: int, max_k: int = 8) -> tuple[int, ...]:
    """Sizes hidden/2**k for k = 0..max_k, plus 1 and 0, sorted ascending."""
    return tuple(sorted({0, 1, *(max(1, hidden_size >> k) for k in range(max_k + 1))}))


@dataclass
class Injection:
    """One model being given a configuration's modules: what `prepare` and `attach` work on."""

    model: nn.Module
    arch: ArchMap
    layers: nn.ModuleList  # the transformer layers
    hidden_size: int
    modules: nn.ModuleDict  # every module added, stored as `model.autopeft` (so in its state_dict)
    folded: bool  # build modules in the form `fold` leaves them (for loading trained weights)


@dataclass
class Export:
    """A trained model's modules being written for another library: what `to_adapters`/`to_peft` read."""

    modules: Any  # the model's `autopeft` ModuleDict, folded and trained
    arch: ArchMap
    active_layers: tuple[int, ...]
    n_layers: int
    hidden_size: int
    name: str  # the adapter's name in `adapters`
    base_prefix: str  # the backbone's attribute in the model, e.g. "bert"

    @property
    def leave_out(self) -> list[int]:
        return [i for i in range(self.n_layers) if i not in self.active_layers]

    def key(self, index: int, module: str) -> str:
        """The state-dict key of `module` (a path inside a transformer layer) in layer `index`."""
        return f"{self.base_prefix}.{self.arch.layers}.{index}.{module}"


class PeftMethod:
    """One PEFT method: its size in a configuration, and everything that depends on it.

    `key` names the size in configurations, search spaces and Optuna parameters (0 = off);
    `label` is its short name in descriptions and tables, `name` its name in messages. A
    subclass implements `params_per_layer` and `attach`, and `prepare`/`fold` when it has
    modules shared by the layers or trained in another form than the one kept. Modules are created layer by layer,
    in registry order, so a seed gives the same initial weights every time.
    """

    key: ClassVar[str]
    label: ClassVar[str]
    name: ClassVar[str]
    in_default_space: ClassVar[bool] = True  # False: searched only when a space file asks for it
    in_paper_space: ClassVar[bool] = True  # in the space of Zhou et al. (SA, PA, PT; `--no-lora` keeps to it)

    def default_sizes(self, hidden_size: int) -> tuple[int, ...]:
        """The sizes a default search space allows (0 included)."""
        return default_sizes(hidden_size)

    def baseline_size(self, hidden_size: int) -> int:
        """The size of this method's standard module: the size a user would pick by hand (all layers)."""
        return max(1, hidden_size // 16)

    def params_per_layer(self, spec: ModelSpec, size: int) -> int:
        """Parameters kept after training in one layer that carries the method at `size` > 0."""
        raise NotImplementedError

    def prepare(self, injection: Injection, size: int, active_layers: tuple[int, ...]) -> None:
        """Add modules shared by all `active_layers` to `injection.modules` (before any `attach`)."""

    def attach(self, injection: Injection, index: int, slot: int, size: int) -> None:
        """Add this method's modules to layer `index` (the `slot`-th active layer), hooked in."""
        raise NotImplementedError

    def fold(self, modules: Any) -> None:
        """Replace a training-only parametrisation in `modules` by what is kept (default: nothing)."""

    #: Whether Hugging Face PEFT represents this method exactly (then `to_peft` is implemented).
    in_peft: ClassVar[bool] = False

    def to_peft(self, export: Export, size: int, modules_to_save: list[str]) -> tuple[Any, Callable[[Any], None]]:
        """A PEFT config (a `peft.PeftConfig`) of this method's trained modules, and a function that copies their
        weights into the transformer layers (an nn.ModuleList) of the PeftModel built from that config."""
        raise NotImplementedError

    #: Where `adapters` puts this method's module in a layer; it allows one module per location.
    adapters_location: ClassVar[str | None] = None

    def to_adapters(self, export: Export, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """This method's trained modules as an `adapters` configuration and its weights (state-dict keys
        as `adapters` saves them). Only methods whose `adapters` module computes exactly what theirs does
        implement it."""
        raise NotImplementedError
