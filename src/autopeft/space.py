"""The AutoPEFT configuration space.

A configuration is (D_SA, D_PA, L_PT, [r_LoRA], one insertion bit per layer shared by
all modules), as in Zhou et al. (TACL 2024). A size of 0 switches that module off.
Sizes come from a set relative to the model's hidden size (hidden / 2**k for k = 0..8,
plus 1 and 0); nothing is tied to one model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Mapping

import numpy as np

from autopeft.errors import UserError

# JSON keys of a configuration, in encoding order.
SIZE_KEYS = ("serial_adapter", "parallel_adapter", "prefix_length", "lora_rank")
CONFIG_KEYS = (*SIZE_KEYS, "layers")


def default_sizes(hidden_size: int, max_k: int = 8) -> tuple[int, ...]:
    """Sizes hidden/2**k for k = 0..max_k, plus 1 and 0, sorted ascending."""
    return tuple(sorted({0, 1, *(max(1, hidden_size >> k) for k in range(max_k + 1))}))


def default_lora_ranks(hidden_size: int) -> tuple[int, ...]:
    """LoRA ranks when LoRA is switched on: 0, 1 and hidden/2**k for k = 3..8."""
    return tuple(sorted({0, 1, *(max(1, hidden_size >> k) for k in range(3, 9))}))


@dataclass(frozen=True)
class PeftConfig:
    """One point of the space. Sizes are absolute (bottleneck dims, prefix length, rank)."""

    serial_adapter: int = 0
    parallel_adapter: int = 0
    prefix_length: int = 0
    lora_rank: int = 0
    layers: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(bool(b) for b in self.layers))
        for key in SIZE_KEYS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise UserError(f"configuration: '{key}' must be a non-negative integer, got {value!r}")
            object.__setattr__(self, key, int(value))

    @property
    def modules_on(self) -> tuple[str, ...]:
        return tuple(k for k in SIZE_KEYS if getattr(self, k) > 0)

    @property
    def active_layers(self) -> tuple[int, ...]:
        return tuple(i for i, on in enumerate(self.layers) if on)

    def check_valid(self) -> None:
        """Raise UserError unless at least one module and one layer are on."""
        if not self.modules_on:
            raise UserError(
                "configuration has no module on: set at least one of "
                + ", ".join(SIZE_KEYS) + " to a positive size"
            )
        if not any(self.layers):
            raise UserError("configuration inserts its modules in no layer: set at least one entry of 'layers' to 1")

    @property
    def is_valid(self) -> bool:
        return bool(self.modules_on) and any(self.layers)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [int(b) for b in self.layers]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PeftConfig:
        if not isinstance(data, Mapping):
            raise UserError(f"configuration must be a JSON object with keys {list(CONFIG_KEYS)}, "
                            f"got {type(data).__name__}")
        unknown = sorted(set(data) - set(CONFIG_KEYS))
        if unknown:
            raise UserError(f"configuration has unknown key(s) {unknown}; allowed keys are {list(CONFIG_KEYS)}")
        if "layers" not in data:
            raise UserError("configuration needs 'layers': a list with one 0/1 entry per transformer layer")
        layers = data["layers"]
        if not isinstance(layers, (list, tuple)) or any(v not in (0, 1, True, False) for v in layers):
            raise UserError(f"configuration 'layers' must be a list of 0/1 values, got {layers!r}")
        return cls(**{k: data.get(k, 0) for k in SIZE_KEYS}, layers=tuple(layers))

    @classmethod
    def from_json_file(cls, path: str | Path) -> PeftConfig:
        return cls.from_dict(_read_json(path, "configuration"))

    def describe(self) -> str:
        """Short human-readable form, e.g. 'SA48+PT8 @ layers 2,3,4,5'."""
        names = {"serial_adapter": "SA", "parallel_adapter": "PA", "prefix_length": "PT", "lora_rank": "LoRA"}
        mods = "+".join(f"{names[k]}{getattr(self, k)}" for k in self.modules_on) or "none"
        return f"{mods} @ layers {','.join(map(str, self.active_layers)) or '-'}"


@dataclass(frozen=True)
class SearchSpace:
    """Allowed sizes per module and which layer bits are searched.

    `fixed_layers[i]` is None when layer i's bit is searched, else its fixed value.
    """

    n_layers: int
    serial_adapter: tuple[int, ...]
    parallel_adapter: tuple[int, ...]
    prefix_length: tuple[int, ...]
    lora_rank: tuple[int, ...] = (0,)
    fixed_layers: tuple[bool | None, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise UserError(f"search space: n_layers must be >= 1, got {self.n_layers}")
        for key in SIZE_KEYS:
            sizes = getattr(self, key)
            if not sizes or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0 for s in sizes):
                raise UserError(f"search space: '{key}' must be a non-empty list of non-negative integers, "
                                f"got {sizes!r}")
            object.__setattr__(self, key, tuple(sorted({int(s) for s in sizes})))
        fixed = self.fixed_layers or (None,) * self.n_layers
        if len(fixed) != self.n_layers:
            raise UserError(f"search space: fixed_layers has {len(fixed)} entries for a {self.n_layers}-layer model")
        object.__setattr__(self, "fixed_layers", tuple(None if f is None else bool(f) for f in fixed))
        if all(getattr(self, k) == (0,) for k in SIZE_KEYS):
            raise UserError("search space: every module is off (all size lists are [0]); allow a positive size for one")
        if all(f is False for f in self.fixed_layers):
            raise UserError("search space: every layer is fixed off; let at least one layer be on or searched")

    # --- construction -------------------------------------------------------------
    @classmethod
    def default(cls, hidden_size: int, n_layers: int, lora: bool = False) -> SearchSpace:
        """The paper's space (SA, PA, PT); LoRA is added only when `lora` is True."""
        sizes = default_sizes(hidden_size)
        return cls(n_layers, sizes, sizes, sizes, default_lora_ranks(hidden_size) if lora else (0,))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], hidden_size: int, n_layers: int) -> SearchSpace:
        """Build from a mapping (parsed YAML/JSON). Missing size lists take the paper's
        defaults; the string "default" does too; `[0]` or `false` switches a module off.

        Keys: serial_adapter, parallel_adapter, prefix_length, lora_rank (lists of sizes),
        fixed_layers ({layer index: 0/1}), n_layers (optional check against the model).
        """
        if not isinstance(data, Mapping):
            raise UserError("search space file must hold a mapping with keys " + ", ".join(SPACE_FILE_KEYS))
        unknown = sorted(set(data) - set(SPACE_FILE_KEYS))
        if unknown:
            raise UserError(f"search space file has unknown key(s) {unknown}; allowed keys are {list(SPACE_FILE_KEYS)}")
        if "n_layers" in data and data["n_layers"] != n_layers:
            raise UserError(f"search space file is for a {data['n_layers']}-layer model, "
                            f"but the model has {n_layers} layers")
        defaults = {
            "serial_adapter": default_sizes(hidden_size),
            "parallel_adapter": default_sizes(hidden_size),
            "prefix_length": default_sizes(hidden_size),
            "lora_rank": (0,),
        }
        sizes: dict[str, tuple[int, ...]] = {}
        for key in SIZE_KEYS:
            value = data.get(key, "default")
            if value == "default":
                value = default_lora_ranks(hidden_size) if key == "lora_rank" and key in data else defaults[key]
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
            **{k: list(getattr(self, k)) for k in SIZE_KEYS},
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
        for key in SIZE_KEYS:
            if getattr(config, key) not in getattr(self, key):
                raise UserError(f"configuration '{key}'={getattr(config, key)} is not in the space; "
                                f"allowed: {list(getattr(self, key))}")
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

    # --- encoding for the optimiser -----------------------------------------------
    @property
    def searched_sizes(self) -> tuple[str, ...]:
        """Size keys with more than one choice (one vector dimension each)."""
        return tuple(k for k in SIZE_KEYS if len(getattr(self, k)) > 1)

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
        x = [getattr(self, k).index(getattr(config, k)) / (len(getattr(self, k)) - 1) for k in self.searched_sizes]
        x += [float(config.layers[i]) for i in self.searched_layers]
        return np.asarray(x, dtype=np.float64)

    def decode(self, x: Iterable[float]) -> PeftConfig:
        """Vector in [0, 1]^dim -> the nearest configuration (may be invalid; see `is_valid`)."""
        x = np.asarray(list(x), dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got shape {x.shape}")
        values: dict[str, Any] = {k: getattr(self, k)[0] for k in SIZE_KEYS}
        for j, key in enumerate(self.searched_sizes):
            choices = getattr(self, key)
            values[key] = choices[int(np.clip(np.rint(x[j] * (len(choices) - 1)), 0, len(choices) - 1))]
        layers = [bool(f) if f is not None else False for f in self.fixed_layers]
        for j, i in enumerate(self.searched_layers):
            layers[i] = bool(x[len(self.searched_sizes) + j] >= 0.5)
        return PeftConfig(**values, layers=tuple(layers))

    def sample(self, rng: np.random.Generator) -> PeftConfig:
        """A uniformly random *valid* configuration (rejection sampling)."""
        for _ in range(10_000):
            values = {k: int(rng.choice(getattr(self, k))) for k in SIZE_KEYS}
            layers = tuple(bool(rng.integers(2)) if f is None else f for f in self.fixed_layers)
            config = PeftConfig(**values, layers=layers)
            if config.is_valid:
                return config
        raise RuntimeError("could not sample a valid configuration; the space is nearly empty")

    # --- Optuna parameters ----------------------------------------------------------
    def to_params(self, config: PeftConfig) -> dict[str, int]:
        """Configuration -> Optuna parameter dict (searched dimensions only)."""
        params = {k: getattr(config, k) for k in self.searched_sizes}
        params.update({f"layer_{i}": int(config.layers[i]) for i in self.searched_layers})
        return params

    def from_params(self, params: Mapping[str, Any]) -> PeftConfig:
        """Optuna parameter dict -> configuration (fixed dimensions filled in)."""
        values = {k: params.get(k, getattr(self, k)[0]) for k in SIZE_KEYS}
        layers = tuple(
            bool(params[f"layer_{i}"]) if f is None else f for i, f in enumerate(self.fixed_layers)
        )
        return PeftConfig(**values, layers=layers)

    def optuna_distributions(self) -> dict[str, Any]:
        """Optuna distributions of the searched dimensions (all categorical)."""
        from optuna.distributions import CategoricalDistribution

        dists: dict[str, Any] = {k: CategoricalDistribution(list(getattr(self, k))) for k in self.searched_sizes}
        dists.update({f"layer_{i}": CategoricalDistribution([0, 1]) for i in self.searched_layers})
        return dists


SPACE_FILE_KEYS = (*SIZE_KEYS, "fixed_layers", "n_layers")


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
        h = self.hidden_size
        per_layer = 0
        for d in (config.serial_adapter, config.parallel_adapter):
            if d:
                per_layer += 2 * h * d + d + h  # down (h*d + d) and up (d*h + h)
        per_layer += 2 * config.prefix_length * self.kv_dim  # keys and values
        r = config.lora_rank
        per_layer += r * (h + self.q_dim) + r * (h + self.kv_dim)  # A and B on query and value
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
