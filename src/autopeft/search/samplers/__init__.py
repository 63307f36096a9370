"""Every search strategy behind one interface: Optuna samplers over a `SearchSpace`.

`make_sampler(name, space, ...)` returns an `optuna.samplers.BaseSampler` for a study
with directions ``["maximize", "minimize"]`` whose trial values are ``(score, percent)``.
The study driver asks a trial, calls ``trial.suggest_categorical(name, choices)`` for
every entry of ``space.optuna_distributions()`` in that order, and builds the
configuration with ``space.from_params(trial.params)``. Whatever the sampler, that
configuration is always valid and inside the space (``space.contains(config)``), and a
given seed gives the same proposals.

Samplers
--------
``"saasbo"`` (default)
    Multi-objective Bayesian optimisation as in AutoPEFT (Zhou et al., TACL 2024): the
    dev score is modelled by a SAAS Gaussian process (sparse axis-aligned subspace prior),
    by default its MAP estimate (``fit="map"``), or fully Bayesian with NUTS (``fit="nuts"``)
    as in the paper; the acquisition is qLogNEHVI (log noisy expected hypervolume
    improvement). MAP is the default because a NUTS proposal costs a large share of a
    low-fidelity trial on a CPU, and NUTS did not search better in the SST-2 table replay
    (docs/lab-notes/benchmarks-log.md, "Sampler overhead").
``"gp"``
    The same with a standard ``SingleTaskGP`` (Matern-5/2 ARD, fitted by marginal
    likelihood).
``"random"``
    Uniformly random valid configurations (never one already tried, while any is left).
``"nsga2"`` / ``"motpe"``
    Optuna's ``NSGAIISampler`` / multivariate ``TPESampler``, wrapped so that they only
    produce valid configurations (`ValidatingSampler`).

``register_sampler(name, factory)`` adds another (README, "Adding a sampler").

Modules: `base` (the shared history and proposal bookkeeping), `bo` (the BO samplers, built on
`autopeft.search.bo`), `random`, `validating`, and `options` (`BOOptions`, the BO samplers'
options, each checked once; `SamplerSettings`, a search's sampler).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.samplers import BaseSampler

from autopeft.errors import UserError
from autopeft.search.samplers.base import ConfigSampler
from autopeft.search.samplers.bo import BayesOptSampler
from autopeft.search.samplers.options import (
    BO_SAMPLERS,
    DEFAULT_N_INIT,
    NUTS_DEFAULTS,
    SAMPLER_NAMES,
    SAMPLERS,
    BOOptions,
    SamplerSettings,
    check_n_init,
    reject_options,
)
from autopeft.search.samplers.random import RandomConfigSampler
from autopeft.search.samplers.validating import ValidatingSampler
from autopeft.space import PeftConfig, SearchSpace

__all__ = [
    "SAMPLER_NAMES",
    "SAMPLERS",
    "register_sampler",
    "NUTS_DEFAULTS",
    "BO_SAMPLERS",
    "DEFAULT_N_INIT",
    "BOOptions",
    "SamplerSettings",
    "make_sampler",
    "ConfigSampler",
    "RandomConfigSampler",
    "BayesOptSampler",
    "ValidatingSampler",
]


SamplerFactory = Callable[..., BaseSampler]


def register_sampler(name: str, factory: SamplerFactory) -> None:
    """Make `factory` the sampler `name` of `make_sampler`, `SamplerSettings` and ``--sampler``.

    `factory(space, *, seed, n_init, percent_fn, candidates, standards, **options)` returns an Optuna
    sampler; a `ConfigSampler` subclass gets the standard modules, candidate restriction and proposal
    bookkeeping for free (`tests/toy_sampler.py` is a worked example). Options it does not take
    should raise a UserError (`reject_options`).
    """
    if not isinstance(name, str) or not name or name != name.lower():
        raise UserError(f"a sampler name must be a non-empty lower-case string, got {name!r}")
    SAMPLERS[name] = factory


def make_sampler(
    name: str = "saasbo",
    space: SearchSpace | None = None,
    *,
    seed: int | None = None,
    n_init: int = DEFAULT_N_INIT,
    percent_fn: Callable[[PeftConfig], float] | None = None,
    candidates: Sequence[PeftConfig] | None = None,
    standards: Sequence[PeftConfig] = (),
    **options: Any,
) -> BaseSampler:
    """Build the sampler `name` for `space`.

    Args:
        name: one of ``SAMPLERS`` (built in: "saasbo", "gp", "random", "nsga2", "motpe"; more
            with `register_sampler`).
        space: the configuration space; every proposal is a valid configuration of it.
        seed: makes the proposals reproducible (None: a random seed).
        n_init: number of initial random trials of the BO samplers; the population
            size of "nsga2" (its first generation is random); ``n_startup_trials`` of
            "motpe". Ignored by "random".
        percent_fn: analytic % trainable parameters of a configuration (e.g.
            ``ModelSpec.percent``); the BO samplers then model that objective exactly.
        candidates: restrict every proposal to these configurations (a tabular
            benchmark): BO scores only the unseen candidates, random draws among them,
            NSGA-II/MOTPE proposals are replaced by the nearest unseen candidate.
        standards: configurations every sampler proposes first, in order (the standard
            modules of the space, `SearchSpace.standard_modules`); then its own proposals
            (for the BO samplers: then ``n_init`` random ones).
        options: "saasbo" and "gp": the fields of `BOOptions` (``fit`` and the NUTS settings
            for "saasbo" only); "nsga2"/"motpe": keyword arguments of Optuna's
            ``NSGAIISampler`` / ``TPESampler``. ``ref_point`` is accepted and ignored by
            "random", "nsga2" and "motpe".

    Raises:
        UserError: unknown sampler name, unknown option or bad option value (`SettingError`
            for the BO samplers' options and ``n_init``).
    """
    if not isinstance(name, str) or name.lower() not in SAMPLERS:
        raise UserError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    if not isinstance(space, SearchSpace):
        raise UserError(f"make_sampler needs a SearchSpace, got {type(space).__name__}")
    check_n_init(n_init)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise UserError(f"seed must be an integer or None, got {seed!r}")
    if percent_fn is not None and not callable(percent_fn):
        raise UserError("percent_fn must be a callable PeftConfig -> float (e.g. ModelSpec.percent)")
    return SAMPLERS[name.lower()](space, seed=seed, n_init=n_init, percent_fn=percent_fn, candidates=candidates,
                                  standards=standards, **options)


def _bayes_opt(name: str) -> SamplerFactory:
    def factory(space, *, seed, n_init, percent_fn, candidates, standards, **options):
        return BayesOptSampler(space, BOOptions.from_options(name, options), seed=seed, n_init=n_init,
                               percent_fn=percent_fn, candidates=candidates, standards=standards)
    return factory


# The hypervolume reference point only matters to the BO samplers; the others accept (and
# ignore) it, so that a driver can pass the same options to every sampler.
def _random(space, *, seed, n_init, percent_fn, candidates, standards, **options):
    options.pop("ref_point", None)
    reject_options("random", options, ())
    return RandomConfigSampler(space, seed=seed, candidates=candidates, standards=standards)


def _optuna(name: str) -> SamplerFactory:
    def factory(space, *, seed, n_init, percent_fn, candidates, standards, **options):
        options.pop("ref_point", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                if name == "nsga2":
                    kwargs = {"population_size": max(2, n_init), **options}
                    delegate: BaseSampler = optuna.samplers.NSGAIISampler(seed=seed, **kwargs)
                else:
                    kwargs = {"n_startup_trials": n_init, "multivariate": True, **options}
                    delegate = optuna.samplers.TPESampler(seed=seed, **kwargs)
            except TypeError as exc:
                raise UserError(f"sampler {name!r}: bad option ({exc})") from None
            except ValueError as exc:
                raise UserError(f"sampler {name!r}: bad option value ({exc})") from None
        return ValidatingSampler(delegate, space, seed=seed, candidates=candidates, standards=standards)
    return factory


for _name, _factory in (("saasbo", _bayes_opt("saasbo")), ("gp", _bayes_opt("gp")), ("random", _random),
                        ("nsga2", _optuna("nsga2")), ("motpe", _optuna("motpe"))):
    register_sampler(_name, _factory)
