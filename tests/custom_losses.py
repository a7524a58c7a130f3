"""User-defined losses for the tests, named as ``tests.custom_losses:NAME``."""

import jax
import jax.numpy as jnp
import numpy as np

NOT_CALLABLE = 3.0


def weighted_squared(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error counted twice for high ratings (target >= 4): ``[n] -> [n]``."""
    weight = jnp.where(target >= 4.0, 2.0, 1.0)
    return weight * jnp.square(pred - target)


def reduced(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Wrong: reduces to a scalar."""
    return jnp.mean(jnp.square(pred - target))


def rounded(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Wrong: zero gradient everywhere."""
    return jnp.square(jnp.round(pred) - jnp.round(target))


def numpy_inside(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Wrong: leaves JAX, so it cannot be traced."""
    return jnp.asarray(np.square(np.asarray(pred) - np.asarray(target)))
