"""The pure JAX core: factor models, their fit by Gibbs sampling or gradient optimizers, and scoring.

The public API::

    from factorflow.engine import FactorModel, TrainConfig, Triplets, fit

:func:`fit` trains on :class:`Triplets` with a :class:`TrainConfig` and
returns a :class:`FitResult`; :meth:`FactorModel.fit` wraps that result in a
model that predicts, recommends, saves and loads. The subpackages are the two
engines (:mod:`factorflow.engine.gibbs`, :mod:`factorflow.engine.gradient`) and
the JAX runtime (:mod:`factorflow.engine.runtime`); the engine imports neither
the stages, the warehouse nor Airflow.

The names load on first use: the modules that need no JAX
(:mod:`factorflow.engine.triplets`, :mod:`~factorflow.engine.split`,
:mod:`~factorflow.engine.memory`, :mod:`~factorflow.engine.config`, ...) stay
importable without it, as the build and publish stages import them.
"""

from __future__ import annotations

import importlib

#: Public name -> the module that owns it.
_OWNERS = {
    "FactorModel": "factorflow.engine.model",
    "FactorParams": "factorflow.engine.factors",
    "FitResult": "factorflow.engine.results",
    "GibbsConfig": "factorflow.engine.gibbs.sampler",
    "TrainConfig": "factorflow.engine.config",
    "TrainingDivergedError": "factorflow.engine.results",
    "Triplets": "factorflow.engine.triplets",
    "fit": "factorflow.engine.dispatch",
}

__all__ = sorted(_OWNERS)


def __getattr__(name: str):
    if name not in _OWNERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_OWNERS[name]), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
