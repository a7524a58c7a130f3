"""Bayesian factorization by Gibbs sampling: the sampler, its chain, kernels, layout, priors and averaging.

:func:`factorflow.engine.gibbs.sampler.fit_gibbs` is the engine's
``optimizer="gibbs"``; callers reach it through :func:`factorflow.engine.fit`.
"""
