"""Triplets: the COO ratings type, its npz form and the dense masked-matrix form."""

from __future__ import annotations

import numpy as np
import pytest

from factorflow.engine.triplets import Triplets, to_dense

pytestmark = pytest.mark.unit


class TestDenseForm:
    def test_matches_triplets(self):
        t = Triplets(np.array([0, 1, 1], np.int32), np.array([2, 0, 1], np.int32),
                     np.array([4.0, 1.0, 5.0], np.float32))
        values, mask = to_dense(t, n_users=2, n_items=3)
        np.testing.assert_array_equal(values, [[0, 0, 4], [1, 5, 0]])
        np.testing.assert_array_equal(mask, [[0, 0, 1], [1, 1, 0]])

    def test_out_of_shape(self):
        t = Triplets(np.array([2], np.int32), np.array([0], np.int32), np.array([1.0], np.float32))
        with pytest.raises(ValueError, match="past the matrix shape"):
            to_dense(t, n_users=2, n_items=3)

    def test_npz_roundtrip_without_pickle(self, tmp_path):
        t = Triplets(np.array([0, 1], np.int32), np.array([1, 0], np.int32), np.array([2.5, 3.0], np.float32))
        t.save(tmp_path / "t.npz")
        back = Triplets.load(tmp_path / "t.npz")
        for x, y in zip(t, back):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype


def test_triplets_replace_keeps_the_other_fields():
    t = Triplets(np.array([0, 1, 2], np.int32), np.array([1, 0, 2], np.int32),
                 np.array([1.0, 2.0, 3.0], np.float32))
    r = t._replace(ratings=t.ratings * 2)
    assert len(r) == 3 and r.users is t.users and r.ratings.tolist() == [2.0, 4.0, 6.0]
