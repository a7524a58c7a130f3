"""Batched Cholesky factor and solve for the Gibbs half-step, rows on the last axis.

Small ``D x D`` systems (``D = rank + 1``), one per row of a side: each loop
step is one vectorized pass over all rows, in a short program with no LAPACK
call to bind when a new process loads it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cholesky(a: jax.Array) -> jax.Array:
    """Lower Cholesky factors of a batch of SPD matrices, rows last.

    A loop over the ``D`` columns, each step one pass over all rows (the batch
    is the minor, vectorized axis): faster on a CPU than LAPACK's batched
    ``potrf`` (one call per matrix) for these small matrices, in a program a
    few hundred instructions long, and no LAPACK to bind when a new process
    loads it. No pivoting, like ``potrf``: a matrix that is not positive
    definite gives nan.

    Args:
        a: ``[D, D, R]`` symmetric positive definite matrices ``a[:, :, r]``.

    Returns:
        ``[D, D, R]`` lower triangular ``L`` with ``L Lᵀ = a`` (zeros above).
    """
    d = a.shape[0]
    below = jnp.arange(d)[:, None]

    def column(j, factor):
        row_j = jax.lax.dynamic_index_in_dim(factor, j, 0, keepdims=False)        # L[j, :j]
        v = (jax.lax.dynamic_index_in_dim(a, j, 1, keepdims=False)
             - jnp.sum(factor * row_j[None], 1))                                  # [D, R]
        pivot = jnp.sqrt(jax.lax.dynamic_index_in_dim(v, j, 0, keepdims=False))
        return jax.lax.dynamic_update_index_in_dim(
            factor, jnp.where(below >= j, v / pivot, 0.0), j, 1)

    return jax.lax.fori_loop(0, d, column, jnp.zeros_like(a))


def cho_solve(factor: jax.Array, b: jax.Array) -> jax.Array:
    """``x`` with ``L Lᵀ x = b`` for :func:`cholesky` factors, rows last.

    Args:
        factor: ``[D, D, R]`` lower triangular ``L``.
        b: ``[D, K, R]`` right-hand sides.

    Returns:
        ``[D, K, R]`` solutions.
    """
    d = factor.shape[0]
    pivots = jnp.diagonal(factor, 0, 0, 1).T                                       # [D, R]

    def at(a, j, axis=0):
        return jax.lax.dynamic_index_in_dim(a, j, axis, keepdims=False)

    def forward(j, y):  # L y = b, y[k] = 0 for k >= j so far
        s = at(b, j) - jnp.sum(at(factor, j)[:, None] * y, 0)
        return jax.lax.dynamic_update_index_in_dim(y, s / at(pivots, j)[None], j, 0)

    def backward(t, x):  # Lᵀ x = y, x[k] = 0 for k <= j so far
        j = d - 1 - t
        s = at(y, j) - jnp.sum(at(factor, j, 1)[:, None] * x, 0)
        return jax.lax.dynamic_update_index_in_dim(x, s / at(pivots, j)[None], j, 0)

    y = jax.lax.fori_loop(0, d, forward, jnp.zeros_like(b))
    return jax.lax.fori_loop(0, d, backward, jnp.zeros_like(b))
