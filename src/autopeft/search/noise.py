"""How much of a search's score differences is seed noise, from configurations trained with several seeds.

Estimator: the one-way random-effects ANOVA of the trials, score = configuration effect (variance
sigma_c^2) + seed noise (variance sigma_s^2), for k configurations with n_c seeds each,
N = sum n_c observations:

- ``seed_sd``: the pooled within-configuration standard deviation,
  ``sqrt(MSW)``, ``MSW = sum_c sum_i (y_ci - mean_c)^2 / (N - k)``; ``pairs = N - k`` is its
  degrees of freedom (a configuration with two seeds is one pair).
- ``config_share``: the share of a single draw's variance that the configuration explains,
  ``sigma_c^2 / (sigma_c^2 + MSW)`` with ``sigma_c^2 = max(0, (MSB - MSW) / n0)``,
  ``MSB = sum_c n_c (mean_c - mean)^2 / (k - 1)`` and ``n0 = (N - sum n_c^2 / N) / (k - 1)``
  (the intraclass correlation ICC(1) for unbalanced groups). 1: seeds do not matter; 0: the
  ranking of single draws is noise.

Both are None until a pair exists (and ``config_share`` until two configurations do). With
few pairs they are rough: the relative standard error of ``seed_sd`` is about
``1 / sqrt(2 * pairs)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from collections.abc import Sequence

import numpy as np

#: Below this share of configuration variance, single-seed scores cannot rank configurations.
MIN_CONFIG_SHARE = 0.5


@dataclass(frozen=True)
class NoiseEstimate:
    seed_sd: float | None
    config_share: float | None
    pairs: int

    def to_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    @property
    def too_noisy(self) -> bool:
        """Whether the estimate says this fidelity cannot rank configurations."""
        return self.config_share is not None and self.config_share < MIN_CONFIG_SHARE

    def describe(self) -> str:
        """One line for a report."""
        if self.seed_sd is None:
            return "seed noise not measured yet (no configuration trained with two seeds)"
        return (f"seed SD {self.seed_sd:.2f} ({self.pairs} pair{'s' * (self.pairs != 1)}), "
                f"configuration share {format_share(self.config_share)}")


def format_share(share: float | None) -> str:
    """A configuration share as a percentage, '?' when unknown."""
    return "?" if share is None else f"{100 * share:.0f}%"


def estimate_noise(groups: Sequence[Sequence[float]]) -> NoiseEstimate:
    """The noise estimate from each configuration's scores (one list of scores per configuration)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    n = np.array([len(g) for g in groups], dtype=np.float64)
    k, total = len(groups), float(n.sum())
    pairs = int(total - k)
    if pairs == 0:
        return NoiseEstimate(None, None, 0)
    msw = sum(float(((g - g.mean()) ** 2).sum()) for g in groups) / pairs
    share = None
    if k >= 2:
        means = np.array([g.mean() for g in groups])
        grand = float((n * means).sum() / total)
        msb = float((n * (means - grand) ** 2).sum()) / (k - 1)
        n0 = (total - float((n**2).sum()) / total) / (k - 1)
        config_var = max(0.0, (msb - msw) / n0)
        share = 1.0 if config_var + msw == 0 else config_var / (config_var + msw)
    return NoiseEstimate(math.sqrt(msw), share, pairs)
