"""The options of the BO samplers ("saasbo", "gp"), checked once.

`BOOptions` holds every option `make_sampler` accepts for a BO sampler; `__post_init__`
checks each value and raises `SettingError` (a `UserError`) naming the option and what it
must be. `SamplerSettings` is a search's sampler, in the library's words, checked on
construction; its errors name "sampler.<field>", which the CLI shows as the flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from autopeft.errors import SettingError, UserError

__all__ = ["BOOptions", "DEFAULT_N_INIT", "NUTS_DEFAULTS", "SAMPLERS", "SAMPLER_NAMES", "SamplerSettings",
           "check_n_init", "check_ref_point", "reject_options"]

SAMPLER_NAMES = ("saasbo", "gp", "random", "nsga2", "motpe")  # the built-in samplers
#: name -> factory of every sampler `make_sampler` builds: the built-in ones, then those added with
#: `autopeft.search.samplers.register_sampler`.
SAMPLERS: dict[str, Callable[..., Any]] = {}
BO_SAMPLERS = ("saasbo", "gp")
#: Random trials of the BO samplers after the standard modules (the population of "nsga2", the startup
#: trials of "motpe").
DEFAULT_N_INIT = 8

#: NUTS settings of the "saasbo" sampler with ``fit="nuts"`` (warmup, draws before thinning,
#: thinning: num_samples // thinning = 8 MCMC samples of the GP hyperparameters). Half of
#: BoTorch's tutorial setting (512/256/16): the acquisition's cost grows with the number of
#: MCMC samples, and this keeps a proposal affordable on a small CPU (benchmarks/sampler_overhead.py;
#: docs/lab-notes/benchmarks-log.md, "Sampler overhead").
NUTS_DEFAULTS = {"warmup_steps": 256, "num_samples": 128, "thinning": 16, "max_tree_depth": 6}
_NUTS_OPTIONS = ("fit", *NUTS_DEFAULTS)

Model = Literal["saas", "gp"]
Fit = Literal["map", "nuts"]
PercentScale = Literal["log", "linear"]


def _option_error(option: str, problem: str) -> SettingError:
    return SettingError(option, problem, context="sampler option")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def check_n_init(n_init: Any) -> None:
    """Raise SettingError unless `n_init` (the initial random trials) is a positive integer."""
    if isinstance(n_init, bool) or not isinstance(n_init, int) or n_init < 1:
        raise SettingError("n_init", f"must be a positive integer, got {n_init!r}", context="")


def check_ref_point(ref_point: Any) -> tuple[float, float]:
    """A hypervolume reference point (score, percent) as floats; SettingError unless finite with percent > 0."""
    if (
        not isinstance(ref_point, (list, tuple)) or len(ref_point) != 2
        or not all(_is_number(v) and math.isfinite(v) for v in ref_point) or ref_point[1] <= 0
    ):
        raise SettingError("ref_point", f"must be (score, percent) with percent > 0, got {ref_point!r}", context="")
    return float(ref_point[0]), float(ref_point[1])


def reject_options(name: str, options: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Raise UserError if `options` has a key the sampler `name` does not take."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes no options"
        raise UserError(f"sampler {name!r}: unknown option(s) {unknown}; {hint}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BOOptions:
    """Options of `BayesOptSampler` (the "saasbo" and "gp" samplers of `make_sampler`).

    Attributes:
        model: "saas" (SAAS prior, "saasbo") or "gp" (``SingleTaskGP``, Matern-5/2 ARD).
        fit: how the SAAS GP is fitted: "map" (BoTorch's ``get_fitted_map_saas_model``) or
            "nuts" (fully Bayesian, ``SaasFullyBayesianSingleTaskGP``). Ignored by "gp".
        warmup_steps, num_samples, thinning, max_tree_depth: NUTS settings (`NUTS_DEFAULTS`).
        mc_samples: Sobol quasi-MC samples of the acquisition.
        n_random_candidates: random valid configurations in each candidate pool.
        max_local_candidates: at most this many neighbours of the observed front in the pool,
            and per hill-climbing round.
        climb_rounds, climb_top_k: hill-climbing rounds from the `climb_top_k` best candidates.
        max_batch_size: candidates per acquisition call.
        ref_point: the hypervolume reference point (score, percent); None: adapted to the
            observations (`search.bo.acquisition.reference_point`).
        prune_baseline: qLogNEHVI's ``prune_baseline``.
        num_threads: torch and BLAS threads of a proposal (`search.environment.thread_limit`).
        percent_scale: the second objective is -log10(percent) ("log") or -percent ("linear").
        score_floor_quantile: scores below this quantile are raised to it before the fit
            (`search.bo.model.floor_low_scores`); 0: off.
        replicates: fraction of the trials that may retrain an evaluated configuration with a
            new seed, in [0, 1).
        max_seeds: at most this many seeds per configuration (>= 2).
        calibration_pairs: configurations retrained with a second seed right after the
            initial design, to measure the seed noise (>= 0).

    Raises:
        SettingError: a value of the wrong type or out of range (checked on construction).
    """

    model: Model = "saas"
    fit: Fit = "map"
    warmup_steps: int = NUTS_DEFAULTS["warmup_steps"]
    num_samples: int = NUTS_DEFAULTS["num_samples"]
    thinning: int = NUTS_DEFAULTS["thinning"]
    max_tree_depth: int = NUTS_DEFAULTS["max_tree_depth"]
    mc_samples: int = 32
    n_random_candidates: int = 512
    max_local_candidates: int = 1024
    climb_rounds: int = 2
    climb_top_k: int = 5
    max_batch_size: int = 512
    ref_point: tuple[float, float] | None = None
    prune_baseline: bool = True
    num_threads: int = 1
    percent_scale: PercentScale = "log"
    score_floor_quantile: float = 0.0
    replicates: float = 0.0
    max_seeds: int = 4
    calibration_pairs: int = 2

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, Any]) -> BOOptions:
        """The options of sampler `name` ("saasbo" or "gp") from `make_sampler`'s keyword arguments.

        "gp" takes no NUTS option (``fit`` is accepted and ignored, as its GP is fitted by
        marginal likelihood).
        """
        general = [f.name for f in fields(cls) if f.name not in (*_NUTS_OPTIONS, "model")]
        allowed = [*general, *_NUTS_OPTIONS] if name == "saasbo" else general
        reject_options(name, {k: v for k, v in options.items() if k != "fit"}, allowed)
        return cls(model="saas" if name == "saasbo" else "gp", **options)

    def __post_init__(self) -> None:
        if self.model not in get_args(Model):
            raise SettingError("model", f"must be 'saas' or 'gp', got {self.model!r}", context="")
        if self.fit not in get_args(Fit):
            raise SettingError("fit", f"must be 'nuts' or 'map', got {self.fit!r}", context="sampler 'saasbo': option")
        if self.model == "saas" and self.fit == "nuts" and not all(map(_installed, ("jax", "numpyro"))):
            raise UserError("the fully Bayesian SAAS fit (NUTS) needs JAX and NumPyro, which are not installed: "
                            "pip install 'autopeft[nuts]' (or use the default MAP fit)")
        for k in NUTS_DEFAULTS:
            v, least = getattr(self, k), 0 if k == "warmup_steps" else 1
            if not _is_int(v) or v < least:
                what = "a non-negative integer" if least == 0 else "a positive integer"
                raise SettingError(k, f"must be {what}, got {v!r}", context="sampler 'saasbo': option")
        if self.num_samples < self.thinning:
            raise SettingError("thinning", f"must be at most num_samples (num_samples // thinning draws are kept), "
                               f"got thinning={self.thinning} > num_samples={self.num_samples}",
                               context="sampler 'saasbo': option")
        for k in ("mc_samples", "max_batch_size", "climb_top_k", "num_threads"):
            if not _is_int(getattr(self, k)) or getattr(self, k) < 1:
                raise _option_error(k, f"must be a positive integer, got {getattr(self, k)!r}")
        for k in ("n_random_candidates", "max_local_candidates", "climb_rounds"):
            if not _is_int(getattr(self, k)) or getattr(self, k) < 0:
                raise _option_error(k, f"must be a non-negative integer, got {getattr(self, k)!r}")
        if self.percent_scale not in get_args(PercentScale):
            raise _option_error("percent_scale", f"must be 'log' or 'linear', got {self.percent_scale!r}")
        if not isinstance(self.prune_baseline, bool):
            raise _option_error("prune_baseline", f"must be True or False, got {self.prune_baseline!r}")
        r = self.replicates
        if not _is_number(r) or not 0 <= r < 1:
            raise _option_error("replicates", f"must be a fraction of the trials in [0, 1) (0: off), got {r!r}")
        if not _is_int(self.max_seeds) or self.max_seeds < 2:
            raise _option_error("max_seeds", f"must be an integer >= 2, got {self.max_seeds!r}")
        if not _is_int(self.calibration_pairs) or self.calibration_pairs < 0:
            raise _option_error("calibration_pairs", f"must be >= 0, a whole number (0: no noise calibration), "
                                f"got {self.calibration_pairs!r}")
        q = self.score_floor_quantile
        if not _is_number(q) or not 0 <= q < 1:
            raise _option_error("score_floor_quantile", f"must be a number in [0, 1) (0: off), got {q!r}")
        if self.ref_point is not None:
            object.__setattr__(self, "ref_point", check_ref_point(self.ref_point))

    @property
    def nuts(self) -> dict[str, int]:
        """The NUTS settings, as BoTorch's ``fit_fully_bayesian_model_nuts`` takes them."""
        return {k: getattr(self, k) for k in NUTS_DEFAULTS}


_NUTS_FIELDS = ("warmup_steps", "num_samples", "thinning")


@dataclass(frozen=True)
class SamplerSettings:
    """A search's sampler, in the library's words; every value is checked on construction.

    Attributes:
        name: one of SAMPLER_NAMES.
        n_init: random trials after the standard modules (`make_sampler`'s ``n_init``).
        seed: the seed of the proposals (each worker may have its own).
        nuts: (warmup_steps, num_samples, thinning): "saasbo" fits its SAAS GP by NUTS, as in the
            paper; None: by MAP (the default).
        percent_scale, replicates, calibration_pairs: `BOOptions`' (None: its defaults); "saasbo"
            and "gp" only.
        ref_point: (score, percent) of the hypervolume, also the acquisition's; None: adapted.

    Raises:
        SettingError: naming "sampler.<field>" (the CLI shows the flag instead).
    """

    name: str = "saasbo"
    n_init: int = DEFAULT_N_INIT
    seed: int = 0
    nuts: tuple[int, int, int] | None = None
    percent_scale: PercentScale | None = None
    replicates: float | None = None
    calibration_pairs: int | None = None
    ref_point: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name.lower() not in SAMPLERS:
            raise SettingError("sampler.name", f"must be one of {', '.join(SAMPLERS)}, got {self.name!r}")
        object.__setattr__(self, "name", self.name.lower())
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SettingError("sampler.seed", f"must be an integer, got {self.seed!r}")
        try:
            check_n_init(self.n_init)
        except SettingError as exc:
            raise SettingError("sampler.n_init", exc.problem) from None
        if self.nuts is not None:
            if self.name != "saasbo":
                raise SettingError("sampler.nuts", f"applies to the saasbo sampler, not {self.name!r}; drop it")
            if not isinstance(self.nuts, (tuple, list)) or len(self.nuts) != 3:
                raise SettingError("sampler.nuts", f"must be (warmup_steps, num_samples, thinning), got {self.nuts!r}")
            object.__setattr__(self, "nuts", tuple(self.nuts))
        for key in ("percent_scale", "replicates", "calibration_pairs"):
            if getattr(self, key) is not None and self.name not in BO_SAMPLERS:
                raise SettingError(f"sampler.{key}", f"applies to the saasbo and gp samplers, not {self.name!r}; "
                                   "drop it")
        try:
            if self.name in BO_SAMPLERS:
                BOOptions.from_options(self.name, self.options())
            elif self.ref_point is not None:  # still the report's hypervolume reference point
                check_ref_point(self.ref_point)
        except SettingError as exc:
            if exc.parameter in _NUTS_FIELDS:
                raise SettingError("sampler.nuts", f"(warmup_steps, num_samples, thinning): {exc.parameter} "
                                   f"{exc.problem}") from None
            raise SettingError(f"sampler.{exc.parameter}", exc.problem) from None
        if self.ref_point is not None:
            object.__setattr__(self, "ref_point", check_ref_point(self.ref_point))

    def options(self) -> dict[str, Any]:
        """`make_sampler`'s options: only those given (the others keep `BOOptions`' defaults)."""
        options: dict[str, Any] = {}
        if self.name == "saasbo":
            options = {"fit": "map"} if self.nuts is None else {"fit": "nuts", **dict(zip(_NUTS_FIELDS, self.nuts))}
        for key in ("percent_scale", "replicates", "calibration_pairs", "ref_point"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options
