"""The gradient engine's objective, one value on every layout of the ratings.

The mean data loss over observed ratings plus ``reg`` times the mean, over
observed ratings, of the penalty of that rating's user and item parameters
(see :func:`sparse_objective`), on COO or masked-matrix ratings
(:mod:`factorflow.engine.gradient.layouts`) or slotted ones
(:mod:`factorflow.engine.gradient.slots`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from factorflow.engine.factors import FactorParams
from factorflow.engine.losses import DataLoss, Penalty, l2_penalty, squared_error
from factorflow.engine.gradient.layouts import DenseRatings, SparseRatings
from factorflow.engine.gradient.penalty import counted_penalty
from factorflow.engine.gradient.slots import SlottedRatings
from factorflow.engine.gradient.slots import objective_and_grad as slotted_objective_and_grad


def predict_rows(rows: FactorParams, *, biases: bool = True) -> jax.Array:
    """Predictions ``[n]`` from gathered rows (see :func:`gather_rows`)."""
    pred = jnp.sum(rows.user_factors * rows.item_factors, axis=-1)
    return rows.mean + rows.user_bias + rows.item_bias + pred if biases else pred


def rows_objective(
    params: FactorParams,
    ratings: jax.Array,
    weights: jax.Array | None = None,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
) -> jax.Array:
    """The objective on parameters already gathered per rating.

    Args:
        params: ``mean []``, ``user_bias [n]``, ``item_bias [n]``,
            ``user_factors [n, rank]``, ``item_factors [n, rank]``: row j holds
            rating j's user's and item's parameters.
        ratings: ``[n]`` observed ratings.
        weights: ``[n]`` rating weights (0 for padding), or None for all 1.
        reg: penalty strength.
        loss: per-element data loss.
        penalty: per-element penalty.
        biases: include mean and biases in predictions and penalty.

    Returns:
        ``[]`` (weighted) mean of loss + ``reg`` * per-rating penalty.
    """
    charge = jnp.sum(penalty(params.user_factors), -1) + jnp.sum(penalty(params.item_factors), -1)
    if biases:
        charge = charge + penalty(params.user_bias) + penalty(params.item_bias)
    per_rating = loss(predict_rows(params, biases=biases), ratings) + reg * charge
    if weights is None:
        return jnp.mean(per_rating)
    return jnp.sum(weights * per_rating) / jnp.maximum(jnp.sum(weights), 1e-12)


def gather_rows(params: FactorParams, users: jax.Array, items: jax.Array) -> FactorParams:
    """Each rating's user and item parameters: fields ``[n]`` / ``[n, rank]``."""
    return FactorParams(
        params.mean,
        params.user_bias[users],
        params.item_bias[items],
        params.user_factors[users],
        params.item_factors[items],
    )


def sparse_objective(
    params: FactorParams,
    users: jax.Array,
    items: jax.Array,
    ratings: jax.Array,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
    weights: jax.Array | None = None,
    user_counts: jax.Array | None = None,
    item_counts: jax.Array | None = None,
) -> jax.Array:
    """Mean data loss plus the per-observation penalty over COO ratings, a scalar.

    The penalty is ``reg * mean_over_ratings(pen(p_u) + pen(q_i) + pen(b_u) +
    pen(b_i))`` (each summed over its elements): every rating charges its own
    user's and item's parameters. That is the objective per-rating SGD actually
    minimizes; it scales the shrinkage of a row with its number of ratings, as
    the data term's pull on it, so the best ``reg`` does not move with the
    dataset's size. The global ``mean`` is not penalized: it is a location.

    Args:
        params: model parameters.
        users: ``[n]`` int32 user indices.
        items: ``[n]`` int32 item indices.
        ratings: ``[n]`` float32 observed ratings.
        reg: penalty strength.
        loss: per-element data loss ``(pred, target) -> [n]``.
        penalty: per-element penalty ``x -> x.shape``.
        biases: False predicts ``<p_u, q_i>`` only (mean and biases unused).
        weights: optional ``[n]`` weights; the means become weighted means.
        user_counts: optional ``[n_users]`` ``bincount(users)``; with
            ``item_counts``, the penalty goes through :func:`counted_penalty`.
        item_counts: optional ``[n_items]`` ``bincount(items)``.

    Returns:
        ``[]`` float32 objective.

    Raises:
        ValueError: if ``users``, ``items`` and ``ratings`` differ in shape, or
            counts come with weights.
    """
    if not (jnp.shape(users) == jnp.shape(items) == jnp.shape(ratings)):
        raise ValueError(
            f"users {jnp.shape(users)}, items {jnp.shape(items)} and ratings "
            f"{jnp.shape(ratings)} must have one shape"
        )
    rows = gather_rows(params, users, items)
    if user_counts is None or item_counts is None:
        return rows_objective(rows, ratings, weights, reg=reg, loss=loss, penalty=penalty,
                              biases=biases)
    if weights is not None:
        raise ValueError("weights and counts exclude each other: counts describe all ratings")
    data = jnp.mean(loss(predict_rows(rows, biases=biases), ratings))
    charge = counted_penalty(params, user_counts, item_counts, penalty=penalty, biases=biases)
    return data + reg * charge / ratings.shape[0]


def objective_and_grad(
    params: FactorParams,
    data: SparseRatings | DenseRatings | SlottedRatings,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
) -> tuple[jax.Array, FactorParams]:
    """``jax.value_and_grad(objective)(params, data, ...)``, in two passes on slotted ratings.

    On :class:`factorflow.engine.gradient.slots.SlottedRatings` the gradient comes from
    :func:`factorflow.engine.gradient.slots.objective_and_grad` (per-chunk ``jax.vjp``s, no
    per-rating scatter); other layouts use ``jax.value_and_grad`` directly.

    Returns:
        ``(objective [], gradient)`` with the gradient shaped like ``params``.
    """
    settings = dict(reg=reg, loss=loss, penalty=penalty, biases=biases)
    if isinstance(data, SlottedRatings):
        return slotted_objective_and_grad(params, data, **settings)
    return jax.value_and_grad(objective)(params, data, **settings)


def dense_objective(
    params: FactorParams,
    values: jax.Array,
    mask: jax.Array,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
) -> jax.Array:
    """:func:`sparse_objective` on the masked ``[n_users, n_items]`` matrix.

    The per-observation penalty becomes a count-weighted sum: user u is charged
    once per rating it has, ``mask.sum(1)[u]`` times.

    Args:
        params: model parameters.
        values: ``[n_users, n_items]`` ratings; unobserved entries are ignored.
        mask: ``[n_users, n_items]`` bool, True where observed.
        reg: penalty strength.
        loss: per-element data loss.
        penalty: per-element penalty.
        biases: False predicts ``<p_u, q_i>`` only.

    Returns:
        ``[]`` float32 objective.

    Raises:
        ValueError: if ``values`` and ``mask`` are not both ``[n_users, n_items]``.
    """
    shape = (params.user_factors.shape[0], params.item_factors.shape[0])
    if jnp.shape(values) != shape or jnp.shape(mask) != shape:
        raise ValueError(f"values {jnp.shape(values)} and mask {jnp.shape(mask)} must be {shape}")
    pred = params.user_factors @ params.item_factors.T
    if biases:
        pred = params.mean + params.user_bias[:, None] + params.item_bias[None, :] + pred
    user_count = jnp.sum(mask, 1, dtype=jnp.float32)
    item_count = jnp.sum(mask, 0, dtype=jnp.float32)
    charge = counted_penalty(params, user_count, item_count, penalty=penalty, biases=biases)
    # Unobserved targets are set to the (constant) prediction, so a custom loss
    # sees residual 0 there: no nan from garbage targets leaks through where().
    target = jnp.where(mask, values, jax.lax.stop_gradient(pred))
    data = jnp.sum(jnp.where(mask, loss(pred, target), 0.0))
    return (data + reg * charge) / jnp.maximum(jnp.sum(user_count), 1.0)


def objective(
    params: FactorParams,
    data: SparseRatings | DenseRatings,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
) -> jax.Array:
    """The objective of ``params`` on ratings in either layout, a scalar."""
    settings = dict(reg=reg, loss=loss, penalty=penalty, biases=biases)
    if isinstance(data, DenseRatings):
        return dense_objective(params, data.values, data.mask, **settings)
    if isinstance(data, SlottedRatings):  # its value; XLA drops the unused gradient
        return slotted_objective_and_grad(params, data, **settings)[0]
    return sparse_objective(params, data.users, data.items, data.ratings, weights=data.weights,
                            user_counts=data.user_counts, item_counts=data.item_counts,
                            **settings)
