"""Ids as the data gives them (integers or strings) <-> the contiguous indices a model takes.

A :class:`~factorflow.engine.model.FactorModel` works on indices ``0 .. n - 1``; people
and warehouses speak in ids (``1001``, ``"a3f9-..."``). :func:`encode_ratings`
turns rating rows with ids into :class:`Triplets` plus one :class:`IdIndex` per
side, and the index maps ids to indices and back, refusing unknown ids by name.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from factorflow.engine.split import MIN_USER_RATINGS, split_mask
from factorflow.engine.triplets import Triplets


class IdIndex:
    """Unique ids in sorted order; an id's position is its index.

    Args:
        ids: ``[n]`` unique ids, integers or strings, in any order.

    Raises:
        ValueError: ``ids`` is not 1-D or holds a duplicate.
    """

    def __init__(self, ids: np.ndarray) -> None:
        values = _as_ids(ids)
        if values.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {values.shape}")
        unique = np.unique(values)
        if unique.shape[0] != values.shape[0]:
            raise ValueError(f"ids hold {values.shape[0] - unique.shape[0]} duplicate(s)")
        self._ids = unique

    @classmethod
    def from_values(cls, values: np.ndarray) -> "IdIndex":
        """The distinct ids of ``values`` (repeats allowed, e.g. one per rating)."""
        return cls(np.unique(_as_ids(values)))

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __repr__(self) -> str:
        return f"IdIndex({len(self)} ids, dtype={self._ids.dtype})"

    def index(self, ids) -> np.ndarray:
        """``[n]`` int32 indices of ``[n]`` ids (a list or an array).

        Raises:
            ValueError: naming up to five ids that are not in the index.
        """
        wanted = _as_ids(ids)
        if wanted.ndim != 1:
            raise ValueError(f"ids must be 1-D, got shape {wanted.shape}")
        if wanted.size and wanted.dtype.kind != self._ids.dtype.kind and not (
                wanted.dtype.kind in "iu" and self._ids.dtype.kind in "iu"):
            raise ValueError(f"ids of dtype {wanted.dtype} cannot match this index's "
                             f"{self._ids.dtype} ids")
        positions = np.searchsorted(self._ids, wanted)
        found = positions < len(self)
        found[found] = self._ids[positions[found]] == wanted[found]
        if not found.all():
            unknown = wanted[~found]
            raise ValueError(f"{unknown.shape[0]} unknown id(s), e.g. {unknown[:5].tolist()}")
        return positions.astype(np.int32)

    def ids(self, indices: np.ndarray) -> np.ndarray:
        """The ids at ``indices`` (any shape, e.g. ``recommend``'s ``[b, N]``).

        Raises:
            ValueError: an index is outside ``[0, len)`` (``recommend`` pads with
                ``-1`` only when fewer than ``N`` items are left for a user).
        """
        positions = np.asarray(indices)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise ValueError(f"indices range [{positions.min()}, {positions.max()}] "
                             f"outside [0, {len(self)})")
        return self._ids[positions]


def _as_ids(values) -> np.ndarray:
    """An array of ids; Python strings (object arrays, e.g. from DuckDB) become NumPy text."""
    array = np.asarray(values)
    return array.astype(str) if array.dtype.kind == "O" else array


class EncodedRatings(NamedTuple):
    """Ratings as model input, and the id maps that lead back to the data.

    Attributes:
        triplets: ``[n]`` user indices, item indices and ratings.
        users: user id <-> user index.
        items: item id <-> item index.
    """

    triplets: Triplets
    users: IdIndex
    items: IdIndex

    def split(self, valid_fraction: float = 0.1, *, seed: int = 0,
              min_user_ratings: int = MIN_USER_RATINGS) -> tuple[Triplets, Triplets]:
        """``(train, valid)``: the build stage's seeded per-user split of :attr:`triplets`.

        Every user with at least ``min_user_ratings`` ratings has
        ``floor(valid_fraction * n_u)`` of them held out; lighter users stay in train.
        """
        if not 0.0 <= valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        t = self.triplets
        held = split_mask(t.users, len(self.users), valid_fraction, min_user_ratings, seed)
        return (Triplets(t.users[~held], t.items[~held], t.ratings[~held]),
                Triplets(t.users[held], t.items[held], t.ratings[held]))


def encode_ratings(user_ids, item_ids, ratings) -> EncodedRatings:
    """Rating rows with ids -> :class:`EncodedRatings`, sorted by (user, item).

    The order is the build stage's, so :meth:`EncodedRatings.split` holds out
    the same ratings as the DAG does for the same table and seed.

    Args:
        user_ids: ``[n]`` user ids (integers or strings), one per rating.
        item_ids: ``[n]`` item ids, one per rating.
        ratings: ``[n]`` rating values.

    Raises:
        ValueError: the three arrays differ in length or are not 1-D.
    """
    users, items = np.asarray(user_ids), np.asarray(item_ids)
    values = np.asarray(ratings, np.float32)
    if not users.ndim == items.ndim == values.ndim == 1 or not (
            users.shape == items.shape == values.shape):
        raise ValueError(f"user_ids {users.shape}, item_ids {items.shape} and ratings "
                         f"{values.shape} must be 1-D of one length")
    user_index, item_index = IdIndex.from_values(users), IdIndex.from_values(items)
    u, i = user_index.index(users), item_index.index(items)
    order = np.lexsort((i, u))
    return EncodedRatings(Triplets(u[order], i[order], values[order]), user_index, item_index)
