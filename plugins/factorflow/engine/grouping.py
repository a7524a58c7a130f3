"""Ratings grouped by row: a stable sort by integer key, and each rating's slot in fixed-size chunks.

Shared by the layouts that group ratings by user or item: the gradient's
slotted ratings (:mod:`factorflow.engine.gradient.slots`), the Gibbs chunks
(:mod:`factorflow.engine.gibbs.layout`) and the seen-items index of
:mod:`factorflow.engine.top_n`.
"""

from __future__ import annotations

import numpy as np

#: From this many ratings on, :func:`group_order` sorts by SciPy's CSR conversion.
LARGE = 1 << 20


def group_order(keys: np.ndarray, n_keys: int) -> np.ndarray:
    """A stable ``argsort`` of integer ``keys`` ``[n]`` in ``[0, n_keys)``: ``[n]`` indices.

    Keys below 2^16 are sorted as 16-bit integers (NumPy's stable sort is a
    radix sort for them). Large inputs go through ``scipy.sparse``: the
    canonical CSR form of a matrix with one entry per key at column "its own
    index" lists, row by row, those indices in increasing order, which is
    exactly the stable order; SciPy builds it by counting sort, O(n), where
    NumPy's stable ``argsort`` is O(n log n).
    """
    n = keys.shape[0]
    if n < LARGE:
        small = keys.astype(np.uint16) if n_keys <= 1 << 16 else keys
        return np.argsort(small, kind="stable")
    from scipy.sparse import csr_array  # SciPy only for large inputs: it loads slowly

    index = np.arange(n, dtype=np.int64 if n >= 2**31 - 1 else np.int32)
    return csr_array((np.ones(n, np.int8), (keys, index)), shape=(n_keys, n)).indices


def slot_positions(rows: np.ndarray, n_rows: int, size: int):
    """Where each rating goes when ``rows``' ratings are chunked ``size`` at a time.

    Args:
        rows: ``[n]`` row (user or item) index of each rating.
        n_rows: index range of ``rows``.
        size: slots per chunk.

    Returns:
        ``(order, flat, count, per_row)``: ``order [n]`` sorts the ratings by
        row (stable), ``flat[j]`` is the flat slot of the ``j``-th sorted rating
        (row by row, each row's chunks consecutive), ``count [n_rows]`` the
        ratings and ``per_row [n_rows]`` the chunks of each row.
    """
    order = group_order(rows, n_rows)
    count = np.bincount(rows, minlength=n_rows)
    per_row = -(-count // size)
    first_chunk = np.cumsum(per_row) - per_row
    # Row by row in sorted order, so repeat (sequential) instead of a gather by row.
    pos = np.arange(rows.shape[0], dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    return order, np.repeat(first_chunk * size, count) + pos, count, per_row
