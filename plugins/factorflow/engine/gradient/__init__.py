"""Factorization by gradient optimizers: the objective, its layouts, optimizers, restarts and the fit loop.

:func:`factorflow.engine.gradient.fit.fit_gradient` runs every optimizer but
``"gibbs"``; callers reach it through :func:`factorflow.engine.fit`.
"""
