"""The per-observation penalty summed per row: its value, and its addition to a data loss's gradient.

Every rating charges its own user's and item's parameters, so a row's penalty
counts once per rating it has: summing per row, weighted by the counts, gives
the per-rating sum at O((n_users + n_items) * rank) cost instead of O(n * rank).
The objective (:mod:`factorflow.engine.gradient.objective`) and the slotted
gradient (:mod:`factorflow.engine.gradient.slots`) both add it this way.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from factorflow.engine.factors import FactorParams


def counted_penalty(
    params: FactorParams,
    user_counts: jax.Array,
    item_counts: jax.Array,
    *,
    penalty: Callable[[jax.Array], jax.Array],
    biases: bool = True,
) -> jax.Array:
    """``sum_u count_u * pen(user u) + sum_i count_i * pen(item i)``, a scalar.

    Equal to summing every rating's charge (its user's and item's penalty),
    at O((n_users + n_items) * rank) cost instead of O(n * rank).

    Args:
        params: model parameters (full tables).
        user_counts: ``[n_users]`` ratings per user.
        item_counts: ``[n_items]`` ratings per item.
        penalty: per-element penalty.
        biases: also charge the user and item biases.
    """
    user_charge = jnp.sum(penalty(params.user_factors), -1)
    item_charge = jnp.sum(penalty(params.item_factors), -1)
    if biases:
        user_charge += penalty(params.user_bias)
        item_charge += penalty(params.item_bias)
    return user_counts @ user_charge + item_counts @ item_charge



def with_penalty(params: FactorParams, total: jax.Array, grad: FactorParams,
                 user_counts: jax.Array, item_counts: jax.Array, *, reg: float | jax.Array,
                 penalty: Callable[[jax.Array], jax.Array],
                 biases: bool) -> tuple[jax.Array, FactorParams]:
    """``(objective, gradient)`` from the data loss's sum ``total`` and its gradient ``grad``.

    Adds ``reg`` times :func:`counted_penalty` (and its autodiff gradient) and
    divides by the number of ratings, ``sum(user_counts)``.
    """
    n = jnp.sum(user_counts)
    charge, charge_grad = jax.value_and_grad(
        lambda p: counted_penalty(p, user_counts, item_counts, penalty=penalty,
                                  biases=biases))(params)
    value = (total + reg * charge) / n
    return value, jax.tree.map(lambda g, c: (g + reg * c) / n, grad, charge_grad)
