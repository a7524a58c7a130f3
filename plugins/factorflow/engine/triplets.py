"""Observed ratings in COO form (``Triplets``) and the dense masked-matrix form."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np


class Triplets(NamedTuple):
    """Observed ratings in COO form.

    Attributes:
        users: ``[n]`` int32 user indices.
        items: ``[n]`` int32 item indices.
        ratings: ``[n]`` float32 rating values.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray

    def __len__(self) -> int:  # the number of ratings, not of fields
        return int(self.ratings.shape[0])

    def save(self, path: str | Path) -> None:
        """Write the three arrays to an ``.npz`` file (no pickling)."""
        np.savez(path, users=self.users, items=self.items, ratings=self.ratings)

    @classmethod
    def load(cls, path: str | Path) -> "Triplets":
        """Read triplets written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            return cls(
                users=data["users"].astype(np.int32, copy=False),
                items=data["items"].astype(np.int32, copy=False),
                ratings=data["ratings"].astype(np.float32, copy=False),
            )

    @classmethod
    def concat(cls, *parts: "Triplets") -> "Triplets":
        """All ratings of ``parts`` in one set of triplets."""
        return cls(*(np.concatenate(arrays) for arrays in zip(*parts)))


def _make_triplets(cls, iterable) -> Triplets:
    # NamedTuple's own _make (behind _replace) checks len(), which for Triplets
    # counts ratings; check the number of fields instead. (Assigned after the
    # class is built: NamedTuple forbids defining _make in its body.)
    fields = tuple(iterable)
    if tuple.__len__(fields) != 3:
        raise TypeError(f"Triplets takes 3 arrays, got {tuple.__len__(fields)}")
    return tuple.__new__(cls, fields)


Triplets._make = classmethod(_make_triplets)


def to_dense(triplets: Triplets, *, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The classic masked-matrix form of a set of ratings.

    Args:
        triplets: ratings in COO form.
        n_users: number of rows.
        n_items: number of columns.

    Returns:
        ``(values, mask)``, both ``[n_users, n_items]``: float32 ratings with 0
        where unobserved, and a boolean mask of observed entries.
    """
    if len(triplets) and (triplets.users.max() >= n_users or triplets.items.max() >= n_items):
        raise ValueError(
            f"triplets index past the matrix shape ({n_users}, {n_items}): "
            f"max user {triplets.users.max()}, max item {triplets.items.max()}"
        )
    values = np.zeros((n_users, n_items), np.float32)
    mask = np.zeros((n_users, n_items), bool)
    values[triplets.users, triplets.items] = triplets.ratings
    mask[triplets.users, triplets.items] = True
    return values, mask
