"""The AutoPEFT configuration space.

A configuration is one size per PEFT method (D_SA, D_PA, L_PT, [r_LoRA]; the methods are
listed in `autopeft.methods`) and one insertion bit per layer shared by all modules, as in
Zhou et al. (TACL 2024). A size of 0 switches that module off. Sizes come from a set
relative to the model's hidden size (hidden / 2**k for k = 0..8, plus 1 and 0); nothing is
tied to one model.

A configuration is valid when at least one module and at least one layer are on. That rule is
coded once (`_valid`), which `PeftConfig.is_valid`, `SearchSpace.check` and `SpaceGrid.valid`
apply; `SearchSpace.n_valid` counts what it accepts. `SpaceGrid` is the space as integer index
vectors, the form the samplers search in.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np

from autopeft.errors import UserError
from autopeft.methods import METHODS, default_sizes, size_keys

__all__ = [
    "ModelSpec",
    "PeftConfig",
    "SearchSpace",
    "SpaceGrid",
    "default_sizes",
    "rows_not_in",
    "row_key",
    "size_keys",
    "standard_modules",
    "unique_rows",
]


def _valid(module_on: Any, layer_on: Any) -> Any:
    """The validity rule: at least one module on and at least one layer on.

    Takes bools, or boolean arrays (then elementwise), so that every check of the
    package applies this one rule.
    """
    return module_on & layer_on


def _positional_sizes(what: str, sizes: tuple[Any, ...], named: dict[str, Any]) -> dict[str, Any]:
    """Sizes given by position (in registry order) and by key, checked against the registry."""
    keys = size_keys()
    if len(sizes) > len(keys):
        raise TypeError(f"{what} takes at most {len(keys)} positional sizes ({', '.join(keys)}), got {len(sizes)}")
    given = dict(zip(keys, sizes))
    if twice := sorted(set(given) & set(named)):
        raise TypeError(f"{what} got {twice} both by position and by name")
    if unknown := sorted(set(named) - set(keys)):
        raise UserError(f"{what} has unknown key(s) {unknown}; the PEFT methods are {list(keys)}")
    return {**given, **named}


class PeftConfig:
    """One point of the space: a size per method (absolute: bottleneck dims, prefix length,
    rank; 0 = off) and one insertion bit per layer. Immutable and hashable.

    `PeftConfig(serial_adapter=48, prefix_length=8, layers=(0, 1, 1, 1, 1, 1))`; sizes may
    also be given by position, in registry order. A size reads as an attribute
    (`config.serial_adapter`) or through `size(key)`.
    """

    __slots__ = ("_sizes", "layers")

    def __init__(self, *sizes: int, layers: Iterable[Any] = (), **named: int) -> None:
        on: dict[str, int] = {}
        for key, value in _positional_sizes("configuration", sizes, named).items():
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise UserError(f"configuration: '{key}' must be a non-negative integer, got {value!r}")
            if value:
                on[key] = int(value)
        # Only the sizes that are on are stored, so a method registered later reads as off.
        object.__setattr__(self, "_sizes", tuple((k, on[k]) for k in size_keys() if k in on))
        object.__setattr__(self, "layers", tuple(bool(b) for b in layers))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PeftConfig is immutable; build a new one instead of setting {name!r}")

    def __getattr__(self, name: str) -> int:
        if name in METHODS:
            return self.size(name)
        raise AttributeError(f"PeftConfig has no attribute {name!r}")

    def size(self, key: str) -> int:
        """The size of method `key` (0 when off)."""
        return dict(self._sizes).get(key, 0)

    @property
    def sizes(self) -> dict[str, int]:
        """Size per registered method, 0 included, in registry order."""
        return {k: self.size(k) for k in size_keys()}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeftConfig):
            return NotImplemented
        return self._sizes == other._sizes and self.layers == other.layers

    def __hash__(self) -> int:
        return hash((self._sizes, self.layers))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        return f"PeftConfig({sizes}, layers={self.layers})"

    def __reduce__(self) -> tuple[Any, ...]:
        return functools.partial(PeftConfig, layers=self.layers, **dict(self._sizes)), ()

    @property
    def modules_on(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self._sizes)

    @property
    def active_layers(self) -> tuple[int, ...]:
        return tuple(i for i, on in enumerate(self.layers) if on)

    def check_valid(self) -> None:
        """Raise UserError unless at least one module and one layer are on."""
        if self.is_valid:
            return
        if not self.modules_on:
            raise UserError(
                "configuration has no module on: set at least one of "
                + ", ".join(size_keys()) + " to a positive size"
            )
        raise UserError("configuration inserts its modules in no layer: set at least one entry of 'layers' to 1")

    @property
    def is_valid(self) -> bool:
        """At least one module and one layer are on."""
        return bool(_valid(bool(self.modules_on), any(self.layers)))

    def to_dict(self) -> dict[str, Any]:
        return {**self.sizes, "layers": [int(b) for b in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        keys = [*size_keys(), "layers"]
        if not isinstance(data, Mapping):
            raise UserError(f"configuration must be a JSON object with keys {keys}, got {type(data).__name__}")
        unknown = sorted(set(data) - set(keys))
        if unknown:
            raise UserError(f"configuration has unknown key(s) {unknown}; allowed keys are {keys}")
        if "layers" not in data:
            raise UserError("configuration needs 'layers': a list with one 0/1 entry per transformer layer")
        layers = data["layers"]
        if not isinstance(layers, (list, tuple)) or any(v not in (0, 1, True, False) for v in layers):
            raise UserError(f"configuration 'layers' must be a list of 0/1 values, got {layers!r}")
        return cls(**{k: v for k, v in data.items() if k != "layers"}, layers=tuple(layers))

    @classmethod
    def from_json_file(cls, path: str | Path) -> PeftConfig:
        return cls.from_dict(_read_json(path, "configuration"))

    def describe(self) -> str:
        """Short human-readable form, e.g. 'SA48+PT8 @ layers 2,3,4,5'."""
        mods = "+".join(f"{METHODS[k].label}{v}" for k, v in self._sizes) or "none"
        return f"{mods} @ layers {','.join(map(str, self.active_layers)) or '-'}"


class SearchSpace:
    """Allowed sizes per method and which layer bits are searched. Immutable and hashable.

    `SearchSpace(n_layers, serial_adapter=(0, 8, 16), prefix_length=(0, 4))`; size lists may
    also be given by position, in registry order; a method not given is off, `(0,)`.
    `fixed_layers[i]` is None when layer i's bit is searched, else its fixed value.
    """

    __slots__ = ("_sizes", "fixed_layers", "n_layers")

    def __init__(self, n_layers: int, *sizes: Iterable[int], fixed_layers: Iterable[bool | None] = (),
                 **named: Iterable[int]) -> None:
        if n_layers < 1:
            raise UserError(f"search space: n_layers must be >= 1, got {n_layers}")
        given = _positional_sizes("search space", sizes, named)
        allowed: dict[str, tuple[int, ...]] = {}
        for key in size_keys():
            choices = tuple(given.get(key, (0,)))
            if not choices or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0
                                  for c in choices):
                raise UserError(f"search space: '{key}' must be a non-empty list of non-negative integers, "
                                f"got {list(choices)!r}")
            allowed[key] = tuple(sorted({int(c) for c in choices}))
        fixed = tuple(fixed_layers) or (None,) * n_layers
        if len(fixed) != n_layers:
            raise UserError(f"search space: fixed_layers has {len(fixed)} entries for a {n_layers}-layer model")
        # Only methods with a positive choice are stored, so a method registered later reads as off.
        object.__setattr__(self, "_sizes", tuple((k, v) for k, v in allowed.items() if v != (0,)))
        object.__setattr__(self, "n_layers", int(n_layers))
        object.__setattr__(self, "fixed_layers", tuple(None if f is None else bool(f) for f in fixed))
        if not self._sizes:
            raise UserError("search space: every module is off (all size lists are [0]); allow a positive size for one")
        if all(f is False for f in self.fixed_layers):
            raise UserError("search space: every layer is fixed off; let at least one layer be on or searched")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SearchSpace is immutable; build a new one instead of setting {name!r}")

    def __getattr__(self, name: str) -> tuple[int, ...]:
        if name in METHODS:
            return self.choices(name)
        raise AttributeError(f"SearchSpace has no attribute {name!r}")

    def choices(self, key: str) -> tuple[int, ...]:
        """The sizes allowed for method `key`, ascending; (0,) when it is off."""
        return dict(self._sizes).get(key, (0,))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SearchSpace):
            return NotImplemented
        return (self.n_layers, self._sizes, self.fixed_layers) == (other.n_layers, other._sizes, other.fixed_layers)

    def __hash__(self) -> int:
        return hash((self.n_layers, self._sizes, self.fixed_layers))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={self.choices(k)}" for k in size_keys())
        return f"SearchSpace(n_layers={self.n_layers}, {sizes}, fixed_layers={self.fixed_layers})"

    def __reduce__(self) -> tuple[Any, ...]:
        return functools.partial(SearchSpace, self.n_layers, fixed_layers=self.fixed_layers, **dict(self._sizes)), ()

    # --- construction -------------------------------------------------------------
    @classmethod
    def default(cls, hidden_size: int, n_layers: int, lora: bool = True) -> SearchSpace:
        """The default space: SA, PA, PT and LoRA (the methods `in_default_space`); `lora=False`: the paper's
        space, without the methods that are not `in_paper_space`."""
        return cls(n_layers, **{k: m.default_sizes(hidden_size) for k, m in METHODS.items()
                                if m.in_default_space and (lora or m.in_paper_space)})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], hidden_size: int, n_layers: int) -> SearchSpace:
        """Build from a mapping (parsed YAML/JSON). A missing size list takes the method's
        default when it is in the default space (SA, PA, PT, LoRA) and is off otherwise; the
        string "default" takes the method's default sizes; `[0]` or `false` switches it off.

        Keys: one per method (serial_adapter, parallel_adapter, prefix_length, lora_rank:
        lists of sizes), fixed_layers ({layer index: 0/1}), n_layers (optional check against
        the model).
        """
        file_keys = [*size_keys(), "fixed_layers", "n_layers"]
        if not isinstance(data, Mapping):
            raise UserError("search space file must hold a mapping with keys " + ", ".join(file_keys))
        unknown = sorted(set(data) - set(file_keys))
        if unknown:
            raise UserError(f"search space file has unknown key(s) {unknown}; allowed keys are {file_keys}")
        if "n_layers" in data and data["n_layers"] != n_layers:
            raise UserError(f"search space file is for a {data['n_layers']}-layer model, "
                            f"but the model has {n_layers} layers")
        sizes: dict[str, tuple[int, ...]] = {}
        for key, method in METHODS.items():
            value = data.get(key, "default" if method.in_default_space else (0,))
            if value == "default":
                value = method.default_sizes(hidden_size)
            elif value is False:
                value = (0,)
            elif not isinstance(value, (list, tuple)):
                raise UserError(f"search space '{key}' must be a list of sizes, 'default' or false; got {value!r}")
            sizes[key] = tuple(value)
        fixed: list[bool | None] = [None] * n_layers
        raw_fixed = data.get("fixed_layers") or {}
        if not isinstance(raw_fixed, Mapping):
            raise UserError("search space 'fixed_layers' must map layer indices to 0/1, e.g. {0: 0, 5: 1}")
        for idx, value in raw_fixed.items():
            try:
                i = int(idx)
            except (TypeError, ValueError):
                raise UserError(f"search space 'fixed_layers' key {idx!r} is not a layer index") from None
            if not 0 <= i < n_layers:
                raise UserError(f"search space 'fixed_layers' index {i} is outside 0..{n_layers - 1}")
            if value not in (0, 1, True, False):
                raise UserError(f"search space 'fixed_layers'[{i}] must be 0 or 1, got {value!r}")
            fixed[i] = bool(value)
        return cls(n_layers, **sizes, fixed_layers=tuple(fixed))

    @classmethod
    def from_file(cls, path: str | Path, hidden_size: int, n_layers: int) -> SearchSpace:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"search space file {path} does not exist; pass an existing .yaml/.json file")
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # noqa: BLE001 - parser errors vary by format
            raise UserError(f"search space file {path} is malformed: {exc}") from None
        return cls.from_dict(data or {}, hidden_size, n_layers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_layers": self.n_layers,
            **{k: list(self.choices(k)) for k in size_keys()},
            "fixed_layers": {str(i): int(v) for i, v in enumerate(self.fixed_layers) if v is not None},
        }

    # --- validity -----------------------------------------------------------------
    def check(self, config: PeftConfig) -> None:
        """Raise UserError unless `config` is a valid point of this space."""
        if len(config.layers) != self.n_layers:
            raise UserError(
                f"configuration has {len(config.layers)} layer bits but the model has {self.n_layers} layers; "
                f"give 'layers' exactly {self.n_layers} entries"
            )
        for key in size_keys():
            if config.size(key) not in self.choices(key):
                raise UserError(f"configuration '{key}'={config.size(key)} is not in the space; "
                                f"allowed: {list(self.choices(key))}")
        for i, (bit, fixed) in enumerate(zip(config.layers, self.fixed_layers)):
            if fixed is not None and bit != fixed:
                raise UserError(f"configuration sets layer {i} to {int(bit)} but the space fixes it to {int(fixed)}")
        config.check_valid()

    def contains(self, config: PeftConfig) -> bool:
        try:
            self.check(config)
        except UserError:
            return False
        return True

    def n_valid(self) -> int:
        """The number of valid configurations of the space: (size combinations with a module on)
        x (layer combinations with a layer on), as `_valid` asks for both."""
        n_sizes_off = math.prod(int(0 in self.choices(k)) for k in size_keys())  # 0 or 1: all modules off
        n_layers_off = int(not any(f is True for f in self.fixed_layers))  # 0 or 1: all layers off
        n_sizes = math.prod(len(self.choices(k)) for k in size_keys())
        return (n_sizes - n_sizes_off) * (2 ** len(self.searched_layers) - n_layers_off)

    def max_config(self) -> PeftConfig:
        """The largest configuration: every size at its maximum, every layer on that may be (the
        parameter count grows with each size and layer, so this bounds the space's %)."""
        largest = {k: max(self.choices(k)) for k in size_keys()}
        return PeftConfig(**largest, layers=tuple(f is not False for f in self.fixed_layers))

    def standard_modules(self, hidden_size: int) -> dict[str, PeftConfig]:
        """The standard modules this space contains, by name (e.g. "SA24"): each method alone at its
        `baseline_size` (SA, PA, PT at hidden/16, LoRA rank 8), in all layers."""
        return {name: config for name, config in standard_modules(hidden_size, self.n_layers).items()
                if self.contains(config)}

    def grid(self) -> SpaceGrid:
        """The searched dimensions as integer index vectors (`SpaceGrid`)."""
        return SpaceGrid(self)

    # --- encoding for the optimiser -----------------------------------------------
    @property
    def searched_sizes(self) -> tuple[str, ...]:
        """Size keys with more than one choice (one vector dimension each)."""
        return tuple(k for k in size_keys() if len(self.choices(k)) > 1)

    @property
    def searched_layers(self) -> tuple[int, ...]:
        return tuple(i for i, f in enumerate(self.fixed_layers) if f is None)

    @property
    def dim(self) -> int:
        return len(self.searched_sizes) + len(self.searched_layers)

    @property
    def dim_names(self) -> list[str]:
        return [*self.searched_sizes, *(f"layer_{i}" for i in self.searched_layers)]

    def encode(self, config: PeftConfig) -> np.ndarray:
        """Configuration -> vector in [0, 1]^dim.

        A size becomes its index in the sorted size list divided by (len - 1): since the
        lists are geometric, this is close to a log scale. Layer bits stay 0/1.
        """
        self.check(config)
        x = [self.choices(k).index(config.size(k)) / (len(self.choices(k)) - 1) for k in self.searched_sizes]
        x += [float(config.layers[i]) for i in self.searched_layers]
        return np.asarray(x, dtype=np.float64)

    def decode(self, x: Iterable[float]) -> PeftConfig:
        """Vector in [0, 1]^dim -> the nearest configuration (may be invalid; see `is_valid`)."""
        x = np.asarray(list(x), dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got shape {x.shape}")
        values: dict[str, Any] = {k: self.choices(k)[0] for k in size_keys()}
        for j, key in enumerate(self.searched_sizes):
            choices = self.choices(key)
            values[key] = choices[int(np.clip(np.rint(x[j] * (len(choices) - 1)), 0, len(choices) - 1))]
        layers = [bool(f) if f is not None else False for f in self.fixed_layers]
        for j, i in enumerate(self.searched_layers):
            layers[i] = bool(x[len(self.searched_sizes) + j] >= 0.5)
        return PeftConfig(**values, layers=tuple(layers))

    def sample(self, rng: np.random.Generator) -> PeftConfig:
        """A uniformly random *valid* configuration (rejection sampling)."""
        for _ in range(10_000):
            values = {k: int(rng.choice(self.choices(k))) for k in size_keys()}
            layers = tuple(bool(rng.integers(2)) if f is None else f for f in self.fixed_layers)
            config = PeftConfig(**values, layers=layers)
            if config.is_valid:
                return config
        raise RuntimeError("could not sample a valid configuration; the space is nearly empty")

    # --- Optuna parameters ----------------------------------------------------------
    def to_params(self, config: PeftConfig) -> dict[str, int]:
        """Configuration -> Optuna parameter dict (searched dimensions only)."""
        params = {k: config.size(k) for k in self.searched_sizes}
        params.update({f"layer_{i}": int(config.layers[i]) for i in self.searched_layers})
        return params

    def from_params(self, params: Mapping[str, Any]) -> PeftConfig:
        """Optuna parameter dict -> configuration (fixed dimensions filled in)."""
        values = {k: params.get(k, self.choices(k)[0]) for k in size_keys()}
        layers = tuple(
            bool(params[f"layer_{i}"]) if f is None else f for i, f in enumerate(self.fixed_layers)
        )
        return PeftConfig(**values, layers=layers)

    def optuna_distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched dimensions (all categorical)."""
        from optuna.distributions import CategoricalDistribution

        dists: dict[str, Any] = {k: CategoricalDistribution(list(self.choices(k))) for k in self.searched_sizes}
        dists.update({f"layer_{i}": CategoricalDistribution([0, 1]) for i in self.searched_layers})
        return dists


class SpaceGrid:
    """The searched dimensions of a `SearchSpace` as integer index vectors ("rows").

    A row has ``d = space.dim`` entries: entry j < ``n_sizes`` is the index of the size of
    ``space.searched_sizes[j]`` in its sorted list, the others are the searched layer bits
    (0/1). Rows are what the samplers draw, compare and store; `to_x` maps them to
    ``space.encode``'s [0, 1]^d vectors (index / (len - 1), bits as 0/1), the GP's inputs.
    Arrays of rows have shape ``n x d`` (int64).

    Example::

        grid = space.grid()
        rows = grid.random(np.random.default_rng(0), 5)   # 5 x d valid rows
        configs = [grid.config(r) for r in rows]
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.size_keys = space.searched_sizes
        self.layer_ids = space.searched_layers
        self.n_sizes = len(self.size_keys)
        self.d = space.dim
        self.names = space.dim_names
        #: Choices per dimension (``d``): the number of sizes, or 2 for a layer bit.
        self.n_choices = np.array(
            [len(space.choices(k)) for k in self.size_keys] + [2] * len(self.layer_ids), dtype=np.int64
        )
        self.scale = (self.n_choices - 1).astype(np.float64)
        #: Per searched size key: which of its indices switch the module on (size > 0).
        self.size_positive = [np.array([s > 0 for s in space.choices(k)]) for k in self.size_keys]
        #: A module or a layer is on in every configuration (fixed by the space).
        self.fixed_module_on = any(space.choices(k)[0] > 0 for k in size_keys() if k not in self.size_keys)
        self.fixed_layer_on = any(f is True for f in space.fixed_layers)

    # --- conversions ----------------------------------------------------------------
    def to_x(self, rows: np.ndarray) -> np.ndarray:
        """Rows (``... x d``) -> encoded vectors in [0, 1] (same shape, float64)."""
        return np.asarray(rows, dtype=np.float64) / self.scale

    def from_x(self, x: np.ndarray) -> np.ndarray:
        """Encoded vectors (``... x d``) -> the nearest rows (same shape, int64)."""
        return np.rint(np.asarray(x, dtype=np.float64) * self.scale).astype(np.int64)

    def params(self, row: np.ndarray) -> dict[str, int]:
        """Row (``d``) -> Optuna parameter dict (`SearchSpace.to_params`' form)."""
        out: dict[str, int] = {}
        for j, key in enumerate(self.size_keys):
            out[key] = int(self.space.choices(key)[int(row[j])])
        for j, i in enumerate(self.layer_ids):
            out[f"layer_{i}"] = int(row[self.n_sizes + j])
        return out

    def config(self, row: np.ndarray) -> PeftConfig:
        """Row (``d``) -> configuration."""
        return self.space.from_params(self.params(row))

    def index(self, config: PeftConfig) -> np.ndarray:
        """Configuration of the space -> row (``d``); UserError if it is not one."""
        return self.from_x(self.space.encode(config))

    def row_from_params(self, params: Mapping[str, Any]) -> np.ndarray | None:
        """Row of a complete Optuna parameter dict, or None if it is not a configuration of the space."""
        if not all(n in params for n in self.names):
            return None
        try:
            config = self.space.from_params(params)
        except (UserError, KeyError, TypeError, ValueError):
            return None
        if not self.space.contains(config):
            return None
        return self.index(config)

    # --- validity and generation ----------------------------------------------------
    def valid(self, rows: np.ndarray) -> np.ndarray:
        """Which rows (``n x d``, or one row) are valid configurations: a boolean ``n``."""
        rows = np.atleast_2d(rows)
        modules = np.full(len(rows), self.fixed_module_on)
        for j in range(self.n_sizes):
            modules |= self.size_positive[j][rows[:, j]]
        layers = np.full(len(rows), self.fixed_layer_on)
        if self.d > self.n_sizes:
            layers |= rows[:, self.n_sizes:].any(axis=1)
        return _valid(modules, layers)

    def random(self, rng: np.random.Generator, n: int, fixed: Mapping[int, int] | None = None) -> np.ndarray:
        """Up to `n` uniformly random valid rows (``<= n x d``; rejection sampling, may repeat).

        `fixed` maps dimensions to the index every row takes there.
        """
        out: list[np.ndarray] = []
        got = 0
        for _ in range(100):
            draw = rng.integers(0, self.n_choices, size=(max(2 * (n - got), 16), self.d))
            for j, v in (fixed or {}).items():
                draw[:, j] = v
            draw = draw[self.valid(draw)][: n - got]
            out.append(draw)
            got += len(draw)
            if got >= n:
                break
        return np.concatenate(out) if out else np.zeros((0, self.d), dtype=np.int64)

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """The valid rows one size index +-1, or one or two layer bits, away from `rows` (``n x d``).

        Returns ``m x d`` unique rows, in a deterministic order.
        """
        rows = np.atleast_2d(rows)
        if len(rows) == 0:
            return rows
        parts = []
        for j in range(self.n_sizes):
            for step in (-1, 1):
                nb = rows.copy()
                nb[:, j] += step
                parts.append(nb[(nb[:, j] >= 0) & (nb[:, j] < self.n_choices[j])])
        bits = list(range(self.n_sizes, self.d))
        masks = [[b] for b in bits] + [list(p) for p in itertools.combinations(bits, 2)]
        if masks:
            m = np.zeros((len(masks), self.d), dtype=np.int64)
            for r, cols in enumerate(masks):
                m[r, cols] = 1
            parts.append((rows[:, None, :] ^ m[None, :, :]).reshape(-1, self.d))
        out = np.concatenate(parts)
        return unique_rows(out[self.valid(out)])

    def n_points(self) -> int:
        """The number of rows, valid or not (the product of `n_choices`)."""
        return int(np.prod(self.n_choices.astype(object)))

    def enumerate_valid(self) -> np.ndarray:
        """Every valid row (``n_valid x d``), in lexicographic order; only for small spaces."""
        grid = np.array(list(itertools.product(*(range(c) for c in self.n_choices))), dtype=np.int64)
        grid = grid.reshape(-1, self.d)
        return grid[self.valid(grid)]


def standard_modules(hidden_size: int, n_layers: int) -> dict[str, PeftConfig]:
    """Each registered method alone at the size a user would pick by hand (`PeftMethod.baseline_size`:
    SA and PA bottleneck hidden/16, i.e. reduction factor 16 (Pfeiffer et al.); PT length hidden/16;
    LoRA rank 8 (Hu et al.)), in all layers, named by label and size ("SA24", "LoRA8")."""
    out = {}
    for key, method in METHODS.items():
        size = method.baseline_size(hidden_size)
        out[f"{method.label}{size}"] = PeftConfig(**{key: size}, layers=(True,) * n_layers)
    return out


def unique_rows(rows: np.ndarray) -> np.ndarray:
    """The unique rows of `rows` (``n x d``), in order of first appearance (deterministic)."""
    if len(rows) == 0:
        return rows
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def row_key(row: np.ndarray) -> bytes:
    """A hashable key of one row (``d``), for sets of seen configurations."""
    return np.asarray(row, dtype=np.int64).tobytes()


def rows_not_in(rows: np.ndarray, keys: set[bytes]) -> np.ndarray:
    """The rows of `rows` (``n x d``) whose `row_key` is not in `keys`, in order."""
    if len(rows) == 0:
        return rows
    return rows[np.array([row_key(r) not in keys for r in rows], dtype=bool)]


@dataclass(frozen=True)
class ModelSpec:
    """What the parameter count needs to know about a backbone.

    `q_dim`/`kv_dim` are the output sizes of the query and key/value projections
    (they differ from `hidden_size` under grouped-query attention).
    """

    model_type: str
    n_layers: int
    hidden_size: int
    q_dim: int
    kv_dim: int
    backbone_params: int
    head_params: int

    def module_params(self, config: PeftConfig) -> int:
        """Parameters of the PEFT modules kept after training (prefix folded)."""
        per_layer = sum(METHODS[key].params_per_layer(self, config.size(key)) for key in config.modules_on)
        return per_layer * len(config.active_layers)

    def trainable_params(self, config: PeftConfig) -> int:
        """Modules + task head."""
        return self.module_params(config) + self.head_params

    def percent(self, config: PeftConfig) -> float:
        """% trainable parameters relative to the backbone."""
        return 100.0 * self.trainable_params(config) / self.backbone_params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} file {path} is not valid JSON: {exc}") from None
