"""The Gibbs kernels' device layout: each side's ratings by row, in padded chunks.

Every size is rounded up by :func:`bucket` (at most 1/8 padding), so fits of
similar size reuse the compiled kernels of :mod:`factorflow.engine.gibbs.kernels`;
:func:`padded_shapes` picks the sizes, :func:`chunk_layout` lays a side's
ratings out in chunks of its rows, :func:`pad_obs` pads the flat rating list
and :func:`device_layouts` puts both sides on the device. NumPy and
``jax.device_put`` only: laying out the data compiles nothing.
"""

from __future__ import annotations

import jax
import numpy as np

from factorflow.engine.grouping import slot_positions

#: Users and items share one padded shape unless that costs more than this much
#: extra work per sweep (estimated as chunk gathers plus per-row Cholesky flops).
SHARE_MAX_OVERHEAD = 0.5


def bucket(n: int, minimum: int = 32) -> int:
    """``n`` rounded up to the next of 8 sizes per power of two (<= 1/8 padding)."""
    n = max(int(n), minimum)
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def chunk_layout(rows, cols, vals, n_rows, n_chunks, chunk, pad_value):
    """Each row's ratings in chunks of ``chunk`` (padding has weight 0).

    Returns ``(row [NC], col [NC, C], val [NC, C], weight [NC, C], has [R])``,
    chunks sorted by row; ``has`` marks rows with at least one rating.
    """
    order, flat, count, per_row = slot_positions(rows, n_rows, chunk)
    size = n_chunks * chunk
    col = np.zeros(size, np.int32)
    val = np.full(size, pad_value, np.float32)
    weight = np.zeros(size, np.float32)
    col[flat], val[flat], weight[flat] = cols[order], vals[order], 1.0
    row = np.full(n_chunks, n_rows - 1, np.int32)  # padding chunks: last row, weight 0
    row[: per_row.sum()] = np.repeat(np.arange(n_rows, dtype=np.int32), per_row)
    return (row, col.reshape(n_chunks, chunk), val.reshape(n_chunks, chunk),
            weight.reshape(n_chunks, chunk), (count > 0).astype(np.float32))


def pad_obs(u, i, r, size, pad_value):
    """``(users, items, ratings, weight)`` padded to ``size`` (weight 0, rating ``pad_value``)."""
    n = r.shape[0]
    pad = lambda a, v: np.concatenate([a, np.full(size - n, v, a.dtype)])  # noqa: E731
    return pad(u, 0), pad(i, 0), pad(r, np.float32(pad_value)), pad(np.ones(n, np.float32), 0)


def padded_shapes(cu, ci, chunk, d):
    """``((R, NC, C) of users, of items)``: padded rows, chunks and chunk size.

    Work per half-step is estimated as ``NC (C + 4) D² + R D³`` (per-rating
    outer products and per-chunk sums, per-row Cholesky). Both sides get one
    shape (one compile) with ``C = chunk`` unless that costs more than
    ``SHARE_MAX_OVERHEAD`` over separate shapes, where each side takes the
    power-of-two ``C <= chunk`` with the least work (few ratings per row, as
    for the items of a long-tail catalog, favour short chunks).
    """
    def shape(c, size):
        return bucket(c.shape[0]), bucket((-(-c // size)).sum()), size

    def cost(r, nc, size):
        return nc * (size + 4) * d * d + r * d**3

    sizes = [1 << j for j in range(2, chunk.bit_length()) if 1 << j < chunk] + [chunk]
    own = [min((shape(c, s) for s in sizes), key=lambda x: cost(*x)) for c in (cu, ci)]
    same = [shape(c, chunk) for c in (cu, ci)]
    shared = tuple(max(a, b) for a, b in zip(*same))
    if 2 * cost(*shared) <= (1 + SHARE_MAX_OVERHEAD) * sum(cost(*s) for s in own):
        return shared, shared
    return tuple(own)


def device_layouts(train, shapes, n_obs: int, mean: float):
    """Both sides' chunk layouts and the padded rating list, on the device.

    Args:
        train: ``(users [n], items [n], ratings [n])``.
        shapes: ``((R, NC, C) of users, of items)`` from :func:`padded_shapes`.
        n_obs: padded rating count.
        mean: the padding's rating.

    Returns:
        ``(layouts, obs, has)``: each side's :func:`chunk_layout`; ``obs`` the
        users' ``(user, item, rating, weight)`` list and the items' view of the
        same device arrays with the ids swapped; ``has`` the two host ``[R]``
        row masks. Each host array is dropped as soon as the device holds its
        copy, so the host never holds more than one of these, the fit's largest
        arrays, at a time.
    """
    u, i, r = train
    lays, has = [], []
    for rows, cols, (n_rows, n_chunks, chunk) in ((u, i, shapes[0]), (i, u, shapes[1])):
        side = chunk_layout(rows, cols, r, n_rows, n_chunks, chunk, mean)
        has.append(side[4])
        lays.append(jax.device_put(side))
        del side
    by_user = jax.device_put(pad_obs(u, i, r, n_obs, mean))
    by_item = (by_user[1], by_user[0], by_user[2], by_user[3])
    return tuple(lays), (by_user, by_item), tuple(has)
