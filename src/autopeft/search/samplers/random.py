"""The "random" sampler: uniformly random valid configurations."""

from __future__ import annotations

from autopeft.search.samplers.base import ConfigSampler

__all__ = ["RandomConfigSampler"]


class RandomConfigSampler(ConfigSampler):
    """Uniformly random valid configurations, never one already tried while any is left."""

    def _propose(self, study, trial, history, rng, info):
        info["kind"] = "random"
        return self._random_unseen(rng, history.seen_keys())
