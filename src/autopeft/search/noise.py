"""How much of a search's score differences is seed noise, from configurations trained with several seeds.

Estimator (one-way random-effects view of the trials: score = configuration effect + seed noise):

- ``seed_sd``: the pooled within-configuration standard deviation,
  ``sqrt(sum_c sum_i (y_ci - mean_c)^2 / sum_c (n_c - 1))`` over the configurations with
  n_c >= 2 seeds; its degrees of freedom ``pairs = sum_c (n_c - 1)`` (a configuration with
  two seeds is one pair).
- ``config_share``: the share of the score variance across configurations that is not seed
  noise, ``1 - seed_sd^2 / var(first scores)`` clipped to [0, 1], where ``var(first scores)``
  is the sample variance (ddof 1) of one draw per configuration (its first seed), the spread
  a single-seed search sees. It is the intraclass correlation: 1 means seeds do not matter,
  0 means the ranking of single draws is noise.

Both are None until a pair exists (and ``config_share`` until two configurations do). With
few pairs they are rough: the relative standard error of ``seed_sd`` is about
``1 / sqrt(2 * pairs)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

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
        """One line for a report or a progress bar."""
        if self.seed_sd is None:
            return "seed noise not measured yet (no configuration trained with two seeds)"
        share = "?" if self.config_share is None else f"{100 * self.config_share:.0f}%"
        return f"seed SD {self.seed_sd:.2f} ({self.pairs} pair{'s' * (self.pairs != 1)}), configuration share {share}"


def estimate_noise(groups: Sequence[Sequence[float]]) -> NoiseEstimate:
    """The noise estimate from each configuration's scores (one list per configuration, first seed first)."""
    groups = [np.asarray(g, dtype=np.float64) for g in groups if len(g)]
    pairs = sum(len(g) - 1 for g in groups)
    if pairs == 0:
        return NoiseEstimate(None, None, 0)
    within = sum(float(((g - g.mean()) ** 2).sum()) for g in groups)
    seed_var = within / pairs
    share = None
    if len(groups) >= 2:
        total = float(np.var([g[0] for g in groups], ddof=1))
        if total > 0:
            share = float(np.clip(1.0 - seed_var / total, 0.0, 1.0))
        else:  # every configuration's first draw is the same
            share = 1.0 if seed_var == 0 else 0.0
    return NoiseEstimate(math.sqrt(seed_var), share, pairs)
