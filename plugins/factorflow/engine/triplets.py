"""Observed ratings in COO form (``Triplets``) and the dense masked-matrix form."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from factorflow.engine.artifacts import ArtifactError, load_npz, reading, save_npz

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
        """Write the three arrays to an ``.npz`` file (no pickling), atomically."""
        save_npz(path, users=self.users, items=self.items, ratings=self.ratings)

    @classmethod
    def load(cls, path: str | Path) -> "Triplets":
        """Read triplets written by :meth:`save`.

        Raises:
            ArtifactError: the file is not a readable ``.npz`` of triplets.
        """
        data = load_npz(path, ("users", "items", "ratings"))
        with reading(path):
            triplets = cls(users=data["users"].astype(np.int32, copy=False),
                           items=data["items"].astype(np.int32, copy=False),
                           ratings=data["ratings"].astype(np.float32, copy=False))
        if not (triplets.users.shape == triplets.items.shape == triplets.ratings.shape
                and triplets.ratings.ndim == 1):
            raise ArtifactError(path, "holds arrays of different lengths")
        return triplets

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


def check_fit_inputs(train: Triplets, valid: Triplets | None, *, n_users: int,
                     n_items: int) -> tuple[Triplets, Triplets | None]:
    """A fit's ratings as NumPy arrays, after checking them; ``valid`` None when empty.

    Raises:
        ValueError: for ``n_users`` or ``n_items`` below 1, an empty ``train``, or
            a set (named ``train``/``valid`` in the message) whose arrays are not
            1-D of one length, whose indices fall outside ``[0, n)``, or whose
            ratings are not finite.
    """
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    if len(train) == 0:
        raise ValueError("train has no ratings")
    train = _checked(train, "train", n_users, n_items)
    if valid is not None:
        valid = _checked(valid, "valid", n_users, n_items)
    return train, valid if valid is not None and len(valid) else None


def _checked(triplets: Triplets, name: str, n_users: int, n_items: int) -> Triplets:
    users, items, ratings = (np.asarray(a) for a in triplets)
    if not (users.ndim == items.ndim == ratings.ndim == 1
            and users.shape == items.shape == ratings.shape):
        raise ValueError(f"{name}: users {users.shape}, items {items.shape}, "
                         f"ratings {ratings.shape} must be 1-D of one length")
    if users.size:
        for index, n, what in ((users, n_users, "user"), (items, n_items, "item")):
            if index.min() < 0 or index.max() >= n:
                raise ValueError(f"{name}: {what} index range [{index.min()}, {index.max()}] "
                                 f"outside [0, {n})")
        if not np.all(np.isfinite(ratings)):
            raise ValueError(f"{name}: ratings contain nan or inf")
    return Triplets(users, items, ratings)
