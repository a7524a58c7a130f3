"""Row-slotted COO ratings: the full-batch gradient in two gather passes, no per-rating scatter.

Each side's ratings are grouped by row (user, or item) into chunks of ``C``
slots, a chunk holding ratings of one row only (the last chunk of a row is
padded). An epoch's gradient then takes two passes, each a ``jax.lax.scan``
over blocks of ``B`` chunks (``B * C`` about :data:`SLOTS_PER_STEP` slots, so a
block's gathered rows stay in cache):

1. user chunks: gather the chunk's user row once and its items' rows per slot,
   predict, and let JAX differentiate: ``jax.value_and_grad`` of the loss in
   the predictions gives each rating's ``dL/dpred``, ``jax.vjp`` of the
   prediction carries it to the user row (summing over the chunk's slots);
   each chunk adds one row into the user gradient;
2. item chunks: the same ``jax.vjp`` of the prediction, now with respect to
   the chunk's item row, takes each slot's ``dL/dpred`` from pass 1 (by its
   position) and the slot's user row.

Against one pass that scatters two gradient rows per rating, this adds a
gradient row only once per chunk, and XLA:CPU fuses each pass's per-slot
gathers into one loop, so a full-batch epoch runs faster (figures in
``tests/bench/README.md``). The derivatives are still JAX's: any loss of
:mod:`factorflow.engine.losses` or a user's.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.factors import FactorParams
from factorflow.engine.losses import DataLoss, Penalty, l2_penalty, squared_error
from factorflow.engine.grouping import slot_positions
from factorflow.engine.triplets import Triplets
from factorflow.engine.gradient.penalty import with_penalty

#: Slots gathered per scan step (``B * C``).
SLOTS_PER_STEP = 4096
#: Full-batch training slots its ratings from this many on (below, the flat
#: COO gradient is as fast and needs no layout).
SLOTTED_MIN_RATINGS = 2 * SLOTS_PER_STEP
#: Slots per chunk tried for each side (the one with the least estimated work wins).
CHUNK_SIZES = (4, 8, 16, 32)
#: A chunk costs about this many slots' work besides its slots (its own row's
#: gather and its gradient row's add).
CHUNK_OVERHEAD = 8


class SlottedRatings(NamedTuple):
    """Ratings slotted by user and by item, on the device (see the module docs).

    Attributes:
        user_row: ``[NU, BU]`` int32, each user chunk's user (0 for padding chunks).
        user_item: ``[NU, BU, CU]`` int32, each slot's item; -1 marks padding.
        user_rating: ``[NU, BU, CU]`` float32 ratings (0 in padding).
        item_row: ``[NI, BI]`` int32, each item chunk's item.
        item_pos: ``[NI, BI, CI]`` int32, each slot's rating as a flat position
            in the user slots; padding points one past their end.
        item_user: ``[NI, BI, CI]`` int32, each slot's user (0 in padding).
        user_counts: ``[n_users]`` float32 ratings per user (for the penalty).
        item_counts: ``[n_items]`` float32 ratings per item.
    """

    user_row: jax.Array
    user_item: jax.Array
    user_rating: jax.Array
    item_row: jax.Array
    item_pos: jax.Array
    item_user: jax.Array
    user_counts: jax.Array
    item_counts: jax.Array


def chunk_size(counts: np.ndarray) -> int:
    """Slots per chunk for rows with ``counts`` ratings: least ``slots + 8 * chunks``."""
    def work(c):
        chunks = int((-(-counts // c)).sum())
        return chunks * c + CHUNK_OVERHEAD * chunks
    return min(CHUNK_SIZES, key=lambda c: (work(c), -c))


def _slots(rows: np.ndarray, n_rows: int, size: int):
    """Slot of every rating when ``rows``' ratings are chunked ``size`` at a time.

    Returns ``(order, flat, chunk_rows, n_chunks)``: ``order`` sorts the ratings
    by row (stable), ``flat[j]`` is the flat slot of the ``j``-th sorted rating,
    ``chunk_rows [n_chunks]`` each chunk's row, ``n_chunks`` padded to whole blocks.
    """
    order, flat, _, per_row = slot_positions(rows, n_rows, size)
    block = max(SLOTS_PER_STEP // size, 1)
    n_chunks = max(-(-int(per_row.sum()) // block), 1) * block
    chunk_rows = np.zeros(n_chunks, np.int32)
    chunk_rows[: per_row.sum()] = np.repeat(np.arange(n_rows, dtype=np.int32), per_row)
    return order, flat, chunk_rows, n_chunks


def to_slots(triplets: Triplets, *, n_users: int, n_items: int) -> SlottedRatings:
    """Build :class:`SlottedRatings` (NumPy on the host, then one transfer).

    Args:
        triplets: ``[n]`` user indices, item indices and ratings.
        n_users, n_items: index ranges.
    """
    users = np.asarray(triplets.users)
    items = np.asarray(triplets.items)
    ratings = np.asarray(triplets.ratings, np.float32)
    n = users.shape[0]
    cu, ci = np.bincount(users, minlength=n_users), np.bincount(items, minlength=n_items)
    su, si = chunk_size(cu), chunk_size(ci)
    u_order, u_flat, u_rows, nu_chunks = _slots(users, n_users, su)
    n_slots = nu_chunks * su
    if n_slots >= 2**31 - 1:
        raise ValueError(f"{n:,} ratings need {n_slots:,} slots: more than int32 positions")
    slot_of = np.empty(n, np.int32)
    slot_of[u_order] = u_flat
    user_item = np.full(n_slots, -1, np.int32)
    user_rating = np.zeros(n_slots, np.float32)
    user_item[u_flat], user_rating[u_flat] = items[u_order], ratings[u_order]
    del u_order, u_flat
    i_order, i_flat, i_rows, ni_chunks = _slots(items, n_items, si)
    item_pos = np.full(ni_chunks * si, n_slots, np.int32)
    item_user = np.zeros(ni_chunks * si, np.int32)
    item_pos[i_flat], item_user[i_flat] = slot_of[i_order], users[i_order]
    bu, bi = max(SLOTS_PER_STEP // su, 1), max(SLOTS_PER_STEP // si, 1)
    return SlottedRatings(
        *jax.device_put((u_rows.reshape(-1, bu), user_item.reshape(-1, bu, su),
                         user_rating.reshape(-1, bu, su), i_rows.reshape(-1, bi),
                         item_pos.reshape(-1, bi, si), item_user.reshape(-1, bi, si),
                         cu.astype(np.float32), ci.astype(np.float32))))


def _masked_loss_sum(pred, ratings, real, loss: DataLoss):
    """Summed ``loss`` over real slots; padding's target is its own prediction (residual 0)."""
    target = jnp.where(real, ratings, jax.lax.stop_gradient(pred))
    return jnp.sum(jnp.where(real, loss(pred, target), 0.0))


def objective_and_grad(
    params: FactorParams,
    data: SlottedRatings,
    *,
    reg: float | jax.Array,
    loss: DataLoss = squared_error,
    penalty: Penalty = l2_penalty,
    biases: bool = True,
) -> tuple[jax.Array, FactorParams]:
    """The objective of :func:`factorflow.engine.gradient.objective.sparse_objective` and its gradient.

    Mean data loss over the ratings plus ``reg`` times the per-rating penalty
    (see :func:`factorflow.engine.gradient.penalty.counted_penalty`).

    Returns:
        ``(objective [], gradient)`` with the gradient shaped like ``params``.
    """
    def user_block(carry, block):
        total, grad_mean, grad_bias, grad_factors = carry
        row, item, rating = block                                       # [B], [B, C], [B, C]
        real = item >= 0
        item = jnp.maximum(item, 0)
        q = jax.lax.optimization_barrier(params.item_factors[item])     # [B, C, k]
        c = params.item_bias[item]

        def predict(mean, b, p):
            dot = jnp.einsum("bk,bck->bc", p, q)
            return mean + b[:, None] + c + dot if biases else dot

        pred, back = jax.vjp(predict, params.mean, params.user_bias[row],
                             params.user_factors[row])
        value, d = jax.value_and_grad(_masked_loss_sum)(pred, rating, real, loss)
        d_mean, d_bias, d_factors = back(d)
        return (total + value, grad_mean + d_mean,
                grad_bias.at[row].add(d_bias, indices_are_sorted=True),
                grad_factors.at[row].add(d_factors, indices_are_sorted=True)), d

    zero = jnp.zeros((), params.user_factors.dtype)
    (total, grad_mean, user_bias, user_factors), d = jax.lax.scan(
        user_block, (zero, zero, jnp.zeros_like(params.user_bias),
                     jnp.zeros_like(params.user_factors)),
        (data.user_row, data.user_item, data.user_rating))
    d = jnp.concatenate([d.reshape(-1), jnp.zeros(1, d.dtype)])       # padding's position: 0

    def item_block(carry, block):
        grad_bias, grad_factors = carry
        row, pos, user = block                                          # [B], [B, C], [B, C]

        def predict(c, q):  # one [B] prediction per slot: XLA fuses the slots' gathers
            slots = []
            for j in range(user.shape[1]):
                dot = jnp.sum(params.user_factors[user[:, j]] * q, -1)
                slots.append(params.mean + params.user_bias[user[:, j]] + c + dot
                             if biases else dot)
            return jnp.stack(slots, 1)

        _, back = jax.vjp(predict, params.item_bias[row], params.item_factors[row])
        d_bias, d_factors = back(d[pos])
        return (grad_bias.at[row].add(d_bias, indices_are_sorted=True),
                grad_factors.at[row].add(d_factors, indices_are_sorted=True)), None

    (item_bias, item_factors), _ = jax.lax.scan(
        item_block, (jnp.zeros_like(params.item_bias), jnp.zeros_like(params.item_factors)),
        (data.item_row, data.item_pos, data.item_user))
    grad = FactorParams(grad_mean, user_bias, item_bias, user_factors, item_factors)
    return with_penalty(params, total, grad, data.user_counts, data.item_counts, reg=reg,
                        penalty=penalty, biases=biases)
