"""Which fold-in objective reproduces a model's own rows: its :class:`FoldInSpec`, saved with it.

A gradient-trained model minimised the mean over ratings of ``loss + reg *
(pen(user row) + pen(item row))`` (:func:`factorflow.engine.gradient.objective.sparse_objective`):
a row with ``n`` ratings is charged ``n`` times, so at a stationary point each
row minimises ``Σ_j loss_j + reg n |x|²`` with the other side fixed, that is
``alpha = 2``, ``m = 0`` and ``Lam = 2 reg n I`` in the form of
:mod:`factorflow.engine.conditionals`. Folding in a converged model's
own user gives back its row, to float rounding.

A Gibbs model publishes an average of samples; a row is the average of its
conditional means under sampled priors. Fold-in takes one conditional mean in
the published factor space under an empirical-Bayes prior: the mean and the
covariance (ridged by :data:`RIDGE` of its average variance) of the model's own
rows of that side that have data, and the fit's noise precision ``alpha``
averaged over the later sweeps (:func:`noise_precision`). Re-folding a training
user lands close to its row and predicts as well (tests/engine/test_fold_in.py;
held-out users in tests/bench/fold_in.py).

The spec is computed once, when the model is trained (:func:`spec_from_fit`),
kept by the model through later fold-ins (new rows do not move the prior) and
saved in its ``.npz`` (:func:`spec_arrays`, :func:`spec_from_arrays`). A model
file from before fold-in existed gets :func:`fallback_spec`.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from factorflow.choices import SAMPLER_NAMES
from factorflow.engine.config import TrainConfig
from factorflow.engine.factors import FactorParams
from factorflow.engine.conditionals import RowPrior, side_rows
from factorflow.engine.fold_in import FoldInSpec
from factorflow.engine.triplets import Triplets

#: Ridge added to an empirical row covariance, as a share of its mean variance.
RIDGE = 1e-3
#: Precision every row of a gradient model gets besides its penalty (keeps a
#: row without ratings, or ``reg = 0``, solvable; negligible against the data).
FLOOR = 1e-6
#: Key prefix of the spec's arrays in a model ``.npz``.
PREFIX = "fold_in_"


def gradient_spec(rank: int, config: Mapping[str, Any]) -> FoldInSpec:
    """The spec of a model trained by a gradient optimizer with ``config``.

    Raises:
        ValueError: the model was trained with the l1 penalty (its rows'
            optimum is not a Newton solve; fold-in handles ``l2`` only).
    """
    if config.get("penalty", "l2") != "l2":
        raise ValueError(f"fold-in needs an l2-penalised model; this one was trained with "
                         f"penalty {config.get('penalty')!r}")
    d, biases = rank + 1, bool(config.get("biases", True))
    free = np.ones(d)
    free[-1] = float(biases)
    precision = np.diag(np.where(free > 0, FLOOR, 1.0))  # no bias: held at 0
    prior = RowPrior(np.zeros(d), precision, 2.0 * float(config["reg"]) * np.diag(free))
    return FoldInSpec(alpha=2.0, loss=str(config.get("loss", "squared")), users=prior,
                      items=prior, biases=biases, nonneg=bool(config.get("nonneg", False)))


def empirical_prior(rows: np.ndarray) -> RowPrior:
    """Mean and ridged inverse covariance of the non-zero rows ``[n, D]`` of one side.

    Rows all zero are rows the model had no ratings for; with fewer than two
    rows left the prior is a unit Gaussian around their mean (or 0).
    """
    x = np.asarray(rows, np.float64)
    x = x[np.any(x != 0, axis=1)]
    d = x.shape[1]
    if x.shape[0] < 2:
        return RowPrior(x.mean(0) if x.size else np.zeros(d), np.eye(d), np.zeros((d, d)))
    cov = np.cov(x.T).reshape(d, d)
    cov += RIDGE * max(np.trace(cov) / d, 1e-12) * np.eye(d)
    return RowPrior(x.mean(0), np.linalg.inv(cov), np.zeros((d, d)))


def bayes_spec(params: FactorParams, alpha: float, loss: str = "squared") -> FoldInSpec:
    """The empirical-Bayes spec of a Gibbs model's ``params`` with noise precision ``alpha``."""
    return FoldInSpec(alpha=float(alpha), loss=loss,
                      users=empirical_prior(side_rows(params.user_factors, params.user_bias)),
                      items=empirical_prior(side_rows(params.item_factors, params.item_bias)))


def noise_precision(history: list[dict]) -> float:
    """A Gibbs fit's noise precision: ``noise_std ** -2`` averaged over its later half of sweeps.

    The kept samples come from there (the burn-in and the early, thinned-out
    sweeps are in the first half); the noise settles within a few sweeps.
    """
    later = history[len(history) // 2:]
    return float(np.mean([row["noise_std"] ** -2.0 for row in later]))


def spec_from_fit(params: FactorParams, config: TrainConfig,
                  history: list[dict]) -> FoldInSpec | None:
    """The spec of a model just trained with ``config``; None where it cannot fold in (l1)."""
    if config.optimizer in SAMPLER_NAMES:
        return bayes_spec(params, noise_precision(history), config.loss)
    if config.penalty != "l2":
        return None
    return gradient_spec(params.user_factors.shape[1], config._asdict())


def fallback_spec(params: FactorParams, config: Mapping[str, Any] | None,
                  ratings: Triplets) -> FoldInSpec:
    """The spec of a model saved without one (written before fold-in existed, or built by hand).

    A gradient model's follows from its ``config`` exactly. A Gibbs model (or
    one whose training is unknown) did not keep its noise precision: ``alpha``
    is one over the variance of the ``ratings`` being folded in about ``mean``
    plus the bias of their known side: an overestimate of the noise, so the
    rows shrink more towards the prior than the fit's own would.
    """
    config = config or {}
    if config.get("optimizer", "gibbs") not in SAMPLER_NAMES:
        return gradient_spec(params.user_factors.shape[1], config)
    u, i, r = (np.asarray(a) for a in ratings)
    known_u, known_i = u < params.user_bias.shape[0], i < params.item_bias.shape[0]
    bias = np.where(known_i, np.asarray(params.item_bias)[np.where(known_i, i, 0)], 0.0) + \
        np.where(known_u, np.asarray(params.user_bias)[np.where(known_u, u, 0)], 0.0)
    resid = (r - float(params.mean) - bias)[known_u ^ known_i]
    alpha = 1.0 / max(float(np.var(resid)), 1e-6) if resid.size > 1 else 1.0
    return bayes_spec(params, alpha, str(config.get("loss", "squared")))


def spec_arrays(spec: FoldInSpec) -> dict[str, np.ndarray]:
    """``{name: array}`` of ``spec`` for a model ``.npz`` (keys start with :data:`PREFIX`)."""
    out = {f"{PREFIX}{name}": np.asarray(getattr(spec, name))
           for name in ("alpha", "loss", "biases", "nonneg")}
    for side in ("users", "items"):
        for name, value in getattr(spec, side)._asdict().items():
            out[f"{PREFIX}{side}_{name}"] = np.asarray(value, np.float64)
    return out


def spec_from_arrays(data: Mapping[str, np.ndarray]) -> FoldInSpec | None:
    """The spec :func:`spec_arrays` wrote, or None when ``data`` has none (an older file)."""
    if f"{PREFIX}alpha" not in data:
        return None
    sides = {side: RowPrior(*(np.asarray(data[f"{PREFIX}{side}_{name}"], np.float64)
                              for name in RowPrior._fields)) for side in ("users", "items")}
    return FoldInSpec(alpha=float(data[f"{PREFIX}alpha"]), loss=str(data[f"{PREFIX}loss"]),
                      biases=bool(data[f"{PREFIX}biases"]), nonneg=bool(data[f"{PREFIX}nonneg"]),
                      **sides)
