"""Loss functions for latent-factor models.

Data losses are per-element: they take predictions and targets of one shape and
return values of that same shape, so the caller chooses how to reduce (a mean
over observed ratings, a sum, a weighted sum). Penalties take parameter arrays
and return a scalar.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

DataLoss = Callable[[jax.Array, jax.Array], jax.Array]


def _check_same_shape(**arrays: jax.Array) -> None:
    shapes = {name: tuple(jnp.shape(a)) for name, a in arrays.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"shape mismatch: {listed}; all must be equal")


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-element squared error ``(pred - target) ** 2``.

    Args:
        pred: predictions, any shape, e.g. ``[n]``.
        target: targets, the same shape as ``pred``.

    Returns:
        Squared errors, the shape of ``pred``.

    Raises:
        ValueError: if ``pred`` and ``target`` differ in shape (broadcasting
            is refused: it silently turns ``[n]`` vs ``[n, 1]`` into ``[n, n]``).
    """
    _check_same_shape(pred=pred, target=target)
    return jnp.square(jnp.asarray(pred) - jnp.asarray(target))


def masked_squared_error(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-element squared error that is zero where ``mask`` is False.

    This is the dense formulation: the full ``[n_users, n_items]`` matrix with a
    mask of observed entries. It is cheap to reason about and is the reference
    the sparse (gathered) objective is tested against; for real data prefer the
    gathered form, whose cost grows with the number of ratings.

    Args:
        pred: predictions, e.g. ``[n_users, n_items]``.
        target: ratings, the shape of ``pred``; values where unobserved are ignored.
        mask: boolean, the shape of ``pred``; True where a rating is observed.

    Returns:
        Squared errors, the shape of ``pred``, 0 where ``mask`` is False.

    Raises:
        ValueError: if the three shapes are not all equal.
    """
    _check_same_shape(pred=pred, target=target, mask=mask)
    # where() rather than multiplying by the mask: an unobserved target may hold
    # garbage (inf, nan) and 0 * inf would leak a nan into the sum and gradient.
    return jnp.where(mask, jnp.square(jnp.asarray(pred) - jnp.asarray(target)), 0.0)


def l2_penalty(*arrays: jax.Array) -> jax.Array:
    """Sum of squares of every element of every array, a scalar."""
    return sum((jnp.sum(jnp.square(a)) for a in arrays), jnp.zeros((), jnp.float32))


def l1_penalty(*arrays: jax.Array) -> jax.Array:
    """Sum of absolute values of every element of every array, a scalar."""
    return sum((jnp.sum(jnp.abs(a)) for a in arrays), jnp.zeros((), jnp.float32))


# Per-element data losses by name, for configs that name a loss as a string.
# New entries must follow squared_error's contract: (pred, target) -> same shape.
LOSSES: dict[str, DataLoss] = {
    "squared": squared_error,
}


def get_loss(name: str) -> DataLoss:
    """The data loss registered under ``name`` in :data:`LOSSES`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None
