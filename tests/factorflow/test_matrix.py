"""Build stage: id maps, the seeded split and the COO/dense forms."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factorflow.matrix import Triplets, build_matrices, load_matrices, to_dense

pytestmark = pytest.mark.unit


def _write(tmp_path, users, items, ratings):
    path = tmp_path / "ratings.parquet"
    pl.DataFrame({"user_id": users, "item_id": items, "rating": ratings}).write_parquet(path)
    return path


class TestBuildMatrices:
    def test_string_ids_come_back_exactly(self, tmp_path):
        users = ["b2c1-uuid", "a9f0-uuid", "b2c1-uuid", "zz"] * 3
        items = ["x", "y", "y", "x"] * 3
        path = _write(tmp_path, users, [f"{i}{k}" for k, i in enumerate(items)], [1.0] * 12)
        summary = build_matrices(path, tmp_path / "m", valid_fraction=0.0)
        data = load_matrices(tmp_path / "m")
        assert summary["n_users"] == 3
        assert data.user_ids.to_list() == sorted(set(users))
        # every (index -> id) pair maps back to an input rating
        got = {(data.user_ids[int(u)], data.item_ids[int(i)]) for u, i in zip(data.train.users, data.train.items)}
        assert got == {(u, f"{i}{k}") for k, (u, i) in enumerate(zip(users, items))}

    def test_integer_ids_keep_their_type(self, small_ratings_parquet, tmp_path):
        build_matrices(small_ratings_parquet, tmp_path)
        data = load_matrices(tmp_path)
        assert data.user_ids.dtype == pl.Int64 and data.item_ids.dtype == pl.Int64
        assert data.user_ids.is_sorted() and data.user_ids.n_unique() == len(data.user_ids)

    def test_split_is_deterministic_and_complete(self, small_ratings_parquet, tmp_path):
        a = build_matrices(small_ratings_parquet, tmp_path / "a", seed=3)
        b = build_matrices(small_ratings_parquet, tmp_path / "b", seed=3)
        c = build_matrices(small_ratings_parquet, tmp_path / "c", seed=4)
        ta, tb, tc = (load_matrices(tmp_path / k) for k in "abc")
        for x, y in zip(ta.valid, tb.valid):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(ta.valid.items, tc.valid.items)
        assert a["n_train"] + a["n_valid"] == a["n_ratings"] == b["n_ratings"] == c["n_ratings"]
        # train and validation are disjoint
        key = lambda t: set(zip(t.users.tolist(), t.items.tolist()))  # noqa: E731
        assert not key(ta.train) & key(ta.valid)

    def test_every_user_keeps_training_ratings(self, tmp_path):
        # user 0 has 2 ratings (below min_user_ratings), user 1 has 10
        path = _write(tmp_path, [0, 0] + [1] * 10, list(range(12)), [3.0] * 12)
        build_matrices(path, tmp_path / "m", valid_fraction=0.3, min_user_ratings=5)
        data = load_matrices(tmp_path / "m")
        assert np.bincount(data.train.users).tolist() == [2, 7]
        assert np.bincount(data.valid.users, minlength=2).tolist() == [0, 3]

    @pytest.mark.parametrize("kwargs", [{"valid_fraction": 1.0}, {"valid_fraction": -0.1},
                                        {"min_user_ratings": 1}])
    def test_bad_settings_are_named(self, tmp_path, kwargs):
        path = _write(tmp_path, [1], [1], [1.0])
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            build_matrices(path, tmp_path / "m", **kwargs)

    def test_empty_input(self, tmp_path):
        path = _write(tmp_path, pl.Series([], dtype=pl.Int64), pl.Series([], dtype=pl.Int64),
                      pl.Series([], dtype=pl.Float32))
        with pytest.raises(ValueError, match="no ratings"):
            build_matrices(path, tmp_path / "m")


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
