"""Grouping ratings by row: the stable sort and the chunk slots."""

import numpy as np
import pytest

from factorflow.engine import grouping

pytestmark = pytest.mark.unit


def test_group_order_is_the_stable_argsort_on_both_paths(monkeypatch):
    rng = np.random.default_rng(5)
    for large in (1 << 20, 100):  # NumPy below LARGE, SciPy's CSR from it on
        monkeypatch.setattr(grouping, "LARGE", large)
        for n_keys in (1, 7, 300, 70_000):
            keys = rng.integers(0, n_keys, 5_000).astype(np.int32)
            np.testing.assert_array_equal(grouping.group_order(keys, n_keys),
                                          np.argsort(keys, kind="stable"))


def test_slot_positions_put_each_rows_ratings_in_its_own_chunks():
    rows = np.array([2, 0, 2, 2, 0, 1], np.int32)
    order, flat, count, per_row = grouping.slot_positions(rows, 4, 2)
    np.testing.assert_array_equal(order, [1, 4, 5, 0, 2, 3])     # stable, by row
    np.testing.assert_array_equal(count, [2, 1, 3, 0])
    np.testing.assert_array_equal(per_row, [1, 1, 2, 0])
    # row 0 fills chunk 0 (slots 0, 1), row 1 chunk 1 (slot 2), row 2 chunks 2-3 (slots 4-6)
    np.testing.assert_array_equal(flat, [0, 1, 2, 4, 5, 6])
