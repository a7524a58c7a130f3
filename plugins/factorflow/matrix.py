"""Build: ratings table -> id maps, a seeded train/validation split, COO triplets.

Original ids (integers or strings such as UUIDs) are mapped to contiguous
``int32`` indices; the maps are kept as Parquet so that published tables carry
the ids exactly as the warehouse gave them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

TRAIN_FILE = "train.npz"
VALID_FILE = "valid.npz"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
SUMMARY_FILE = "matrix.json"

#: Users with fewer ratings are kept whole in train by the validation split.
MIN_USER_RATINGS = 5


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


def build_matrices(
    ratings_path: str | Path,
    out_dir: str | Path,
    *,
    valid_fraction: float = 0.1,
    min_user_ratings: int = MIN_USER_RATINGS,
    seed: int = 0,
) -> dict[str, Any]:
    """Map ids, split train/validation and write the matrix artifacts.

    Every user with at least ``min_user_ratings`` ratings has
    ``floor(valid_fraction * n_u)`` of them (chosen by a seeded shuffle) moved to
    validation; the rest, and all ratings of lighter users, stay in train, so
    every user keeps at least one training rating.

    Args:
        ratings_path: Parquet file with columns ``user_id, item_id, rating``.
        out_dir: directory for ``train.npz``, ``valid.npz``, ``users.parquet``,
            ``items.parquet`` and ``matrix.json``.
        valid_fraction: share of each eligible user's ratings held out, in [0, 1).
        min_user_ratings: users with fewer ratings are kept whole in train.
        seed: seed of the split.

    Returns:
        A small JSON-safe summary: counts and artifact paths.
    """
    import polars as pl

    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if min_user_ratings < 2:
        raise ValueError(f"min_user_ratings must be >= 2, got {min_user_ratings}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    ratings = (
        pl.scan_parquet(ratings_path)
        .select("user_id", "item_id", pl.col("rating").cast(pl.Float32))
        .with_columns(
            pl.col("user_id").rank("dense").cast(pl.Int32).sub(1).alias("u"),
            pl.col("item_id").rank("dense").cast(pl.Int32).sub(1).alias("i"),
        )
        .sort("u", "i")
        .collect()
    )
    if ratings.height == 0:
        raise ValueError(f"no ratings in {ratings_path}")
    users = ratings.select("u", "user_id").unique("u").sort("u")
    items = ratings.select("i", "item_id").unique("i").sort("i")
    users.rename({"u": "user_index"}).write_parquet(out / USERS_FILE)
    items.rename({"i": "item_index"}).write_parquet(out / ITEMS_FILE)

    u = ratings["u"].to_numpy()
    i = ratings["i"].to_numpy()
    r = ratings["rating"].to_numpy()
    is_valid = split_mask(u, len(users), valid_fraction, min_user_ratings, seed)
    train = Triplets(u[~is_valid], i[~is_valid], r[~is_valid])
    valid = Triplets(u[is_valid], i[is_valid], r[is_valid])
    train.save(out / TRAIN_FILE)
    valid.save(out / VALID_FILE)

    summary = {
        "matrix_dir": str(out),
        "n_users": len(users),
        "n_items": len(items),
        "n_ratings": ratings.height,
        "n_train": len(train),
        "n_valid": len(valid),
        "density": ratings.height / (len(users) * len(items)),
        "rating_mean": float(r.mean()),
        "rating_min": float(r.min()),
        "rating_max": float(r.max()),
        "seed": seed,
        "valid_fraction": valid_fraction,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def split_mask(
    users: np.ndarray, n_users: int, fraction: float, min_ratings: int, seed: int
) -> np.ndarray:
    """``[n]`` bool: which of ``[n]`` ratings (by user index) go to validation.

    Each user with at least ``min_ratings`` ratings has ``floor(fraction * n_u)``
    of them, chosen by a seeded shuffle, held out; lighter users stay whole.
    """
    counts = np.bincount(users, minlength=n_users)
    n_valid = np.where(counts >= min_ratings, np.floor(fraction * counts), 0).astype(np.int64)
    # Rank each rating inside its user's block by a seeded random key: the
    # ratings with the lowest n_valid[u] ranks are held out.
    keys = np.random.default_rng(seed).random(users.shape[0])
    order = np.lexsort((keys, users))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank_in_user = np.empty_like(order)
    rank_in_user[order] = np.arange(order.shape[0]) - np.repeat(starts, counts)
    return rank_in_user < n_valid[users]


class MatrixArtifacts(NamedTuple):
    """Everything ``build_matrices`` wrote, loaded back."""

    train: Triplets
    valid: Triplets
    user_ids: Any  # polars Series of original user ids, position = index
    item_ids: Any  # polars Series of original item ids, position = index
    summary: dict[str, Any]


def load_matrices(matrix_dir: str | Path) -> MatrixArtifacts:
    """Read back the artifacts of :func:`build_matrices`."""
    import polars as pl

    d = Path(matrix_dir)
    return MatrixArtifacts(
        train=Triplets.load(d / TRAIN_FILE),
        valid=Triplets.load(d / VALID_FILE),
        user_ids=pl.read_parquet(d / USERS_FILE)["user_id"],
        item_ids=pl.read_parquet(d / ITEMS_FILE)["item_id"],
        summary=json.loads((d / SUMMARY_FILE).read_text()),
    )
