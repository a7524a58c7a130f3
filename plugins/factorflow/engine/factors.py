"""The biased factor model's parameters, their initialization and predictions.

The model predicts ``r̂(u, i) = mean + b_u + b_i + <p_u, q_i>``; with biases
switched off (``TrainConfig.biases=False``) ``mean`` and the bias arrays stay
zero, so the same formula gives ``<p_u, q_i>`` alone.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class FactorParams(NamedTuple):
    """Parameters of the biased factor model.

    With random restarts every field gains a leading ``[restarts]`` axis.

    Attributes:
        mean: ``[]`` global offset.
        user_bias: ``[n_users]``.
        item_bias: ``[n_items]``.
        user_factors: ``[n_users, rank]``.
        item_factors: ``[n_items, rank]``.
    """

    mean: jax.Array
    user_bias: jax.Array
    item_bias: jax.Array
    user_factors: jax.Array
    item_factors: jax.Array


def init_params(
    key: jax.Array,
    *,
    n_users: int,
    n_items: int,
    rank: int,
    mean: float,
    scale: float = 0.1,
    nonneg: bool = False,
) -> FactorParams:
    """Zero biases and small random factors.

    Factors are ``normal * scale / sqrt(rank)`` so that the initial dot products
    stay around ``scale**2`` whatever the rank: small enough not to swamp the
    biases, non-zero so that the factors' gradients (each proportional to the
    other side's factors) are not stuck at zero.

    Args:
        key: PRNG key.
        n_users: number of users.
        n_items: number of items.
        rank: number of latent factors, >= 1.
        mean: initial global offset, normally the training mean (0 without biases).
        scale: size of the initial factors.
        nonneg: draw ``|normal|`` instead, for non-negative (NMF-style) factors.

    Returns:
        float32 parameters.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    user_key, item_key = jax.random.split(key)
    std = scale / math.sqrt(rank)
    sign = jnp.abs if nonneg else (lambda x: x)
    return FactorParams(
        mean=jnp.asarray(mean, jnp.float32),
        user_bias=jnp.zeros((n_users,), jnp.float32),
        item_bias=jnp.zeros((n_items,), jnp.float32),
        user_factors=std * sign(jax.random.normal(user_key, (n_users, rank), jnp.float32)),
        item_factors=std * sign(jax.random.normal(item_key, (n_items, rank), jnp.float32)),
    )


def predict(params: FactorParams, users: jax.Array, items: jax.Array) -> jax.Array:
    """Predicted ratings ``[n]`` for ``[n]`` user and item indices."""
    if jnp.shape(users) != jnp.shape(items):
        raise ValueError(f"users {jnp.shape(users)} and items {jnp.shape(items)} differ in shape")
    interaction = jnp.sum(params.user_factors[users] * params.item_factors[items], axis=-1)
    return params.mean + params.user_bias[users] + params.item_bias[items] + interaction


def project_nonneg(params: FactorParams) -> FactorParams:
    """Clip both factor matrices at 0 (biases and mean keep their sign)."""
    return params._replace(
        user_factors=jnp.maximum(params.user_factors, 0.0),
        item_factors=jnp.maximum(params.item_factors, 0.0),
    )
