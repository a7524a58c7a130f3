"""The seeded per-user train/validation split of the build stage.

Each user with enough ratings has a fixed share of them held out for
validation, chosen by a seeded random key a rating; the same seed and ratings
(in the build stage's order) always hold out the same ones.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: About how many ratings the split ranks at a time (whole users).
SPLIT_ROWS = 2_000_000


#: Users with fewer ratings are kept whole in train by the validation split.
MIN_USER_RATINGS = 5

def split_mask(
    users: np.ndarray, n_users: int, fraction: float, min_ratings: int, seed: int,
    *, on_rows: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``[n]`` bool: which of ``[n]`` ratings (by user index) go to validation.

    Each user with at least ``min_ratings`` ratings has ``floor(fraction * n_u)``
    of them, chosen by a seeded shuffle, held out; lighter users stay whole.
    The ratings held out are those of lowest rank in their user's block by a
    seeded random key (one ``rng.random`` a rating, in order; ties by
    position). Users sorted (as the build stage writes them) are ranked a
    block of whole users at a time, so the working set stays bounded.

    Args:
        users: ``[n]`` user index of each rating.
        n_users: number of users.
        fraction: share held out, in [0, 1).
        min_ratings: users with fewer ratings stay whole in train.
        seed: seed of the keys.
        on_rows: called with how many ratings are done, after each block.
    """
    counts = np.bincount(users, minlength=n_users)
    n_valid = np.where(counts >= min_ratings, np.floor(fraction * counts), 0).astype(np.int64)
    rng = np.random.default_rng(seed)
    held = np.empty(users.shape[0], bool)
    for start, stop in _user_blocks(users, counts):
        # Drawing the keys block by block gives the same stream as one draw.
        rank = _rank_in_user(users[start:stop], rng.random(stop - start))
        held[start:stop] = rank < n_valid[users[start:stop]]
        if on_rows is not None:
            on_rows(stop)
    return held


def _user_blocks(users: np.ndarray, counts: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` covering ``users``, of about ``SPLIT_ROWS`` rows of whole users.

    One block, the whole array, if ``users`` is not sorted.
    """
    n = users.shape[0]
    if n <= SPLIT_ROWS or np.any(users[1:] < users[:-1]):
        return [(0, n)]
    ends = np.cumsum(counts)  # sorted: user u's ratings end at ends[u]
    cuts = np.unique(ends[np.searchsorted(ends, np.arange(SPLIT_ROWS, n, SPLIT_ROWS))])
    bounds = [0, *(int(c) for c in cuts if c < n), n]
    return list(zip(bounds[:-1], bounds[1:]))


def _rank_in_user(users: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``[n]`` 0-based rank of each key among its user's keys (ties by position)."""
    import polars as pl

    ranked = pl.DataFrame({"u": users, "k": keys}).select(pl.col("k").rank("ordinal").over("u"))
    return ranked.to_series().to_numpy().astype(np.int64) - 1
