"""Two device layouts of the observed ratings for the gradient engine: COO and masked matrix.

* sparse (COO): ``[n]`` user indices, item indices and ratings; predictions
  are gathered per rating, so an epoch costs O(n * rank) whatever the matrix size.
* dense (masked): the ``[n_users, n_items]`` rating matrix and a boolean mask
  of observed entries, the classic formulation; predictions are one matrix
  product, O(n_users * n_items * rank), which beats gathers on small, dense
  problems.

Full-batch training on many ratings slots them instead
(:mod:`factorflow.engine.gradient.slots`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.choices import REPRESENTATION_NAMES
from factorflow.engine.triplets import Triplets, to_dense

#: "auto" picks dense only when the matrix has at most this many cells ...
DENSE_MAX_CELLS = 4_000_000
#: ... and at least this share of them is observed.
DENSE_MIN_DENSITY = 0.05


class SparseRatings(NamedTuple):
    """COO ratings on the device.

    Attributes:
        users: ``[n]`` int32 user indices.
        items: ``[n]`` int32 item indices.
        ratings: ``[n]`` float32 ratings.
        weights: ``[n]`` float32 weights of a padded minibatch, or None (all 1).
        user_counts: ``[n_users]`` float32 ratings per user (``bincount(users)``),
            or None; with both counts the penalty is summed per row, weighted
            by the counts, instead of per rating: the same value, less work.
        item_counts: ``[n_items]`` float32 ratings per item, or None.
    """

    users: jax.Array
    items: jax.Array
    ratings: jax.Array
    weights: jax.Array | None = None
    user_counts: jax.Array | None = None
    item_counts: jax.Array | None = None


class DenseRatings(NamedTuple):
    """Masked-matrix ratings on the device.

    Attributes:
        values: ``[n_users, n_items]`` float32, 0 where unobserved.
        mask: ``[n_users, n_items]`` bool, True where observed.
    """

    values: jax.Array
    mask: jax.Array


def choose_representation(
    requested: str, *, n_ratings: int, n_users: int, n_items: int
) -> str:
    """``"sparse"`` or ``"dense"`` for ``TrainConfig.representation`` ``requested``.

    ``"auto"`` is dense when ``n_users * n_items <= DENSE_MAX_CELLS`` and the
    density ``n_ratings / (n_users * n_items) >= DENSE_MIN_DENSITY``, else sparse.

    Raises:
        ValueError: for a name outside ``REPRESENTATION_NAMES``.
    """
    if requested not in REPRESENTATION_NAMES:
        raise ValueError(
            f"unknown representation {requested!r}; known: {list(REPRESENTATION_NAMES)}")
    if requested != "auto":
        return requested
    cells = n_users * n_items
    dense = cells <= DENSE_MAX_CELLS and n_ratings >= DENSE_MIN_DENSITY * cells
    return "dense" if dense else "sparse"


def to_device(
    triplets: Triplets, *, n_users: int, n_items: int, representation: str,
) -> SparseRatings | DenseRatings:
    """Ratings in the layout ``"sparse"`` (with per-row counts) or ``"dense"``, on the device.

    Full-batch training on many ratings uses :func:`factorflow.engine.gradient.slots.to_slots` instead.
    """
    if representation == "dense":
        values, mask = to_dense(triplets, n_users=n_users, n_items=n_items)
        return DenseRatings(jnp.asarray(values), jnp.asarray(mask))
    if representation != "sparse":
        raise ValueError(f"representation must be 'sparse' or 'dense', got {representation!r}")
    users, items = np.asarray(triplets.users), np.asarray(triplets.items)
    ratings = np.asarray(triplets.ratings)
    counts = dict(
        user_counts=jnp.asarray(np.bincount(users, minlength=n_users), jnp.float32),
        item_counts=jnp.asarray(np.bincount(items, minlength=n_items), jnp.float32),
    )
    return SparseRatings(
        jnp.asarray(users, jnp.int32),
        jnp.asarray(items, jnp.int32),
        jnp.asarray(ratings, jnp.float32),
        **counts,
    )
