"""The pieces of Bayesian optimisation over a discrete PEFT space, used by `BayesOptSampler`.

- `model`: the GP models of the two objectives and their MC sampler;
- `acquisition`: the maximised objectives, the reference point and qLogNEHVI;
- `discrete_optim`: the candidate pool and the hill climb that maximise the acquisition.

Every function takes what it needs as arguments (no sampler state); torch and BoTorch are
imported inside the functions, so importing these modules stays cheap.
"""
