"""The surrogate models of the BO samplers.

The dev score is modelled by a GP on the encoded configurations (``X: n x d`` in [0, 1]^d,
`SpaceGrid.to_x`), its outcome standardised:

- ``model="saas"``, ``fit="map"`` (default): the SAAS GP (sparse axis-aligned subspace prior)
  at its MAP estimate, BoTorch's ``get_fitted_map_saas_model``;
- ``model="saas"``, ``fit="nuts"``: fully Bayesian, ``SaasFullyBayesianSingleTaskGP`` fitted by
  NUTS, as in AutoPEFT (Zhou et al., TACL 2024);
- ``model="gp"``: a standard ``SingleTaskGP`` (Matern-5/2 ARD) fitted by marginal likelihood.

The second objective (the maximised % parameters, `search.bo.acquisition.percent_objective`)
is known exactly when the sampler has a ``percent_fn``: it is then a
``GenericDeterministicModel`` beside the score GP in a ``ModelList``, with an ``IndexSampler``
beside the score's Sobol sampler in a ``ListSampler``. This works with the fully Bayesian
model too (``PosteriorList`` broadcasts the deterministic values over the MCMC dimension)
and halves the NUTS cost. Without ``percent_fn`` a second GP of the same kind is fitted to
the observed values.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from botorch.models.model import Model, ModelList
    from botorch.sampling.list_sampler import ListSampler
    from torch import Tensor

    from autopeft.search.samplers.options import BOOptions

__all__ = ["fit_gp", "fit_models", "floor_low_scores"]


def floor_low_scores(scores: np.ndarray, quantile: float) -> np.ndarray:
    """Scores below their `quantile` raised to it (lower-tail winsorisation, like Ax's Winsorize).

    The front is made of good configurations; a few that hardly learn (scores near the
    majority class) would otherwise set the GP's output scale and flatten its picture of
    the good ones. `quantile` 0 leaves the scores as they are. scores: ``n``.
    """
    if quantile <= 0 or len(scores) == 0:
        return scores
    return np.maximum(scores, np.quantile(scores, quantile))


def fit_models(
    X: Tensor,
    scores: np.ndarray,
    percent_values: np.ndarray | None,
    options: BOOptions,
    seed: int,
    known_percent: Callable[[Tensor], Tensor] | None = None,
) -> tuple[ModelList, ListSampler]:
    """Fit the models of both objectives; return them as a ``ModelList`` with its MC sampler.

    Args:
        X: ``n x d`` encoded observed configurations (float64).
        scores: ``n`` observed scores.
        percent_values: ``n`` observed values of the second (maximised) objective; used only
            without `known_percent`.
        options: the model (``model``, ``fit``, NUTS settings) and ``mc_samples``.
        seed: seeds the NUTS chain and the MC samplers (``seed``, ``seed + 1``; the second GP's
            NUTS chain ``seed + 2``).
        known_percent: the second objective computed from ``batch x q x d`` inputs
            (``batch x q x 1`` out); None: model it by a second GP.

    Returns:
        ``ModelList(score model, percent model)`` and a ``ListSampler`` of ``mc_samples`` draws.
    """
    import torch
    from botorch.models.deterministic import GenericDeterministicModel
    from botorch.models.model import ModelList
    from botorch.sampling.index_sampler import IndexSampler
    from botorch.sampling.list_sampler import ListSampler
    from botorch.sampling.normal import SobolQMCNormalSampler

    shape = torch.Size([options.mc_samples])
    y_score = torch.as_tensor(scores, dtype=torch.float64).unsqueeze(-1)
    score_model = fit_gp(X, y_score, options, seed)
    if known_percent is not None:
        pct_model = GenericDeterministicModel(known_percent, num_outputs=1)
        pct_sampler = IndexSampler(shape, seed=seed + 1)
    else:
        y_pct = torch.as_tensor(percent_values, dtype=torch.float64).unsqueeze(-1)
        pct_model = fit_gp(X, y_pct, options, seed + 2)
        pct_sampler = SobolQMCNormalSampler(shape, seed=seed + 1)
    sampler = ListSampler(SobolQMCNormalSampler(shape, seed=seed), pct_sampler)
    return ModelList(score_model, pct_model), sampler


def fit_gp(X: Tensor, Y: Tensor, options: BOOptions, seed: int) -> Model:
    """One GP of the kind `options` sets, fitted to ``X: n x d`` and ``Y: n x 1``, in eval mode.

    `seed` seeds the NUTS chain (``fit="nuts"``); the MAP and marginal-likelihood fits use
    torch's global RNG, which the caller seeds.
    """
    from botorch.models.transforms.outcome import Standardize

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        if options.model == "gp":
            from botorch.fit import fit_gpytorch_mll
            from botorch.models import SingleTaskGP
            from gpytorch.mlls import ExactMarginalLogLikelihood

            model = SingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        elif options.fit == "map":
            from botorch.fit import get_fitted_map_saas_model

            model = get_fitted_map_saas_model(X, Y, outcome_transform=Standardize(m=1))
        else:
            from botorch.fit import fit_fully_bayesian_model_nuts
            from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP

            model = SaasFullyBayesianSingleTaskGP(X, Y, outcome_transform=Standardize(m=1))
            fit_fully_bayesian_model_nuts(model, **options.nuts, disable_progbar=True, seed=seed)
            # Each NUTS fit JIT-compiles new JAX code (the model closes over the data) and JAX keeps
            # every executable, so a long NUTS search ran out of memory maps (benchmarks-log, "Sampler overhead").
            jax = sys.modules.get("jax")
            if jax is not None:
                jax.clear_caches()
    model.eval()
    return model
