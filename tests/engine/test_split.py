"""The seeded per-user split: blocks of users hold out what one lexsort over every rating does."""

from __future__ import annotations

import numpy as np
import pytest

from factorflow.engine.split import split_mask

pytestmark = pytest.mark.unit


def reference_split(users: np.ndarray, n_users: int, fraction: float, min_ratings: int,
                    seed: int) -> np.ndarray:
    """The split as first written: one lexsort of (user, seeded key) over every rating."""
    counts = np.bincount(users, minlength=n_users)
    n_valid = np.where(counts >= min_ratings, np.floor(fraction * counts), 0).astype(np.int64)
    keys = np.random.default_rng(seed).random(users.shape[0])
    order = np.lexsort((keys, users))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank_in_user = np.empty_like(order)
    rank_in_user[order] = np.arange(order.shape[0]) - np.repeat(starts, counts)
    return rank_in_user < n_valid[users]


@pytest.fixture
def small_steps(monkeypatch):
    """Split a few rows at a time."""
    import factorflow.engine.split as split

    monkeypatch.setattr(split, "SPLIT_ROWS", 10)


class TestSplitMask:
    def test_blocks_of_users_hold_out_what_one_lexsort_does(self, small_steps):
        counts = np.random.default_rng(1).integers(1, 30, 40)
        users = np.repeat(np.arange(40), counts).astype(np.int32)  # sorted, many blocks
        for seed in range(3):
            np.testing.assert_array_equal(split_mask(users, 40, 0.3, 5, seed),
                                          reference_split(users, 40, 0.3, 5, seed))

    def test_unsorted_users(self, small_steps):
        users = np.random.default_rng(2).integers(0, 25, 300).astype(np.int32)
        np.testing.assert_array_equal(split_mask(users, 25, 0.2, 3, 7),
                                      reference_split(users, 25, 0.2, 3, 7))

    def test_progress_after_each_block(self, small_steps):
        users = np.repeat(np.arange(10), 4).astype(np.int32)
        done: list[int] = []
        split_mask(users, 10, 0.25, 2, 0, on_rows=done.append)
        assert done == [12, 20, 32, 40]  # at the first user end from each multiple of 10

    def test_ties_rank_by_position(self):
        from factorflow.engine.split import _rank_in_user

        users = np.array([0, 0, 0, 1, 1], np.int32)
        keys = np.array([0.5, 0.1, 0.5, 0.2, 0.2])
        assert _rank_in_user(users, keys).tolist() == [1, 0, 2, 0, 1]
