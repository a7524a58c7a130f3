"""Exact top-N items per user without ranking every score: block maxima first.

The items are cut into blocks of :data:`ITEM_BLOCK`. Each of a user's ``k``
best items sits in a block whose maximum is at least that item's score, so it
sits in one of the ``k`` blocks with the highest maxima: ranking the block
maxima, then the ``k x ITEM_BLOCK`` scores of those blocks, finds the same
``k`` items as ranking all ``n_items`` scores, for the price of one max-reduce
over the score block. Items a user has seen are dropped by scattering -inf at
their (row, item) pairs, a list as long as the batch's ratings instead of a
``[users, n_items]`` mask copied to the device per batch.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.grouping import group_order

#: Items per block of the first ranking pass.
ITEM_BLOCK = 128


class BlockedItems(NamedTuple):
    """Item side of a model padded to whole blocks; padding items score -inf.

    Attributes:
        factors: ``[I', w]`` item factors, ``I'`` = ``n_items`` rounded up to
            a multiple of :data:`ITEM_BLOCK`.
        bias: ``[I']`` item biases plus the global mean; -inf on padding.
    """

    factors: jax.Array
    bias: jax.Array


def block_items(mean: float, item_factors: np.ndarray, item_bias: np.ndarray) -> BlockedItems:
    """``mean + b_i`` and ``q_i`` padded to whole blocks, on the default device."""
    n, width = item_factors.shape
    padded = -(-n // ITEM_BLOCK) * ITEM_BLOCK
    factors = np.zeros((padded, width), np.float32)
    factors[:n] = item_factors
    bias = np.full(padded, -np.inf, np.float32)
    bias[:n] = np.float32(mean) + item_bias
    return BlockedItems(*jax.device_put((factors, bias)))


@partial(jax.jit, static_argnames=("k",))
def top_k(user_factors: jax.Array, user_bias: jax.Array, items: BlockedItems,
          seen_rows: jax.Array, seen_items: jax.Array, *, k: int):
    """The ``k`` best items of each of ``b`` users: ``([b, k] scores, [b, k] ids)``.

    Args:
        user_factors: ``[b, w]`` the users' factor rows.
        user_bias: ``[b]`` their biases.
        items: :func:`block_items` of the model.
        seen_rows, seen_items: ``[m]`` (row in the batch, item) pairs that score
            -inf; pairs with a row ``>= b`` are padding and ignored.
        k: items per user, at most ``n_items``.

    Returns:
        Scores best first and their item ids; a slot whose score is -inf (the
        user has fewer than ``k`` unseen items) holds an arbitrary id.
    """
    b = user_factors.shape[0]
    n_blocks = items.bias.shape[0] // ITEM_BLOCK
    scores = user_factors @ items.factors.T + user_bias[:, None] + items.bias[None, :]
    scores = scores.at[seen_rows, seen_items].set(-jnp.inf, mode="drop")
    blocks = scores.reshape(b, n_blocks, ITEM_BLOCK)
    _, best_blocks = jax.lax.top_k(blocks.max(-1), min(k, n_blocks))               # [b, kb]
    candidates = jnp.take_along_axis(blocks, best_blocks[:, :, None], axis=1)
    values, at = jax.lax.top_k(candidates.reshape(b, -1), k)                       # [b, k]
    block = jnp.take_along_axis(best_blocks, at // ITEM_BLOCK, axis=1)
    return values, block * ITEM_BLOCK + at % ITEM_BLOCK


class SeenIndex(NamedTuple):
    """Each user's seen items: user ``u`` saw ``items[bounds[u]:bounds[u + 1]]``."""

    bounds: np.ndarray
    items: np.ndarray


def index_seen(users: np.ndarray, items: np.ndarray, n_users: int) -> SeenIndex:
    """:class:`SeenIndex` of ``[n]`` (user, item) pairs."""
    counts = np.bincount(users, minlength=n_users)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return SeenIndex(bounds, np.asarray(items, np.int32)[group_order(users, n_users)])


def seen_pairs(index: SeenIndex | None, batch: np.ndarray, rows: int):
    """``(rows [m], items [m])`` int32 of every seen item of the users in ``batch``.

    ``m`` is the pair count rounded up to a power of two (a few compiled shapes
    in all); the padding pairs name row ``rows``, which :func:`top_k` ignores.
    """
    if index is None:
        return np.full(1, rows, np.int32), np.zeros(1, np.int32)
    starts = index.bounds[batch]
    counts = index.bounds[batch + 1] - starts
    total = int(counts.sum())
    size = 1 << max(total - 1, 0).bit_length()
    row_ids = np.full(size, rows, np.int32)
    item_ids = np.zeros(size, np.int32)
    row_ids[:total] = np.repeat(np.arange(batch.shape[0], dtype=np.int32), counts)
    # Position of each pair inside its user's run: a global arange minus the
    # run's own offset in the concatenation.
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    item_ids[:total] = index.items[np.repeat(starts, counts) + offsets]
    return row_ids, item_ids
