"""Search: samplers, study storage and the search loop, Pareto front and hypervolume."""

from autopeft.search.samplers import SAMPLER_NAMES, make_sampler

__all__ = ["SAMPLER_NAMES", "make_sampler"]
