"""Search: samplers, study storage and the search loop, Pareto front and hypervolume."""
