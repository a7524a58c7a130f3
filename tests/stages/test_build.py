"""Build stage: id maps, the seeded split and the COO/dense forms."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from factorflow.engine.triplets import Triplets, to_dense
from factorflow.stages.build import build_matrices, load_matrices
from factorflow.engine.split import split_mask

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
    """Encode, sort and split a few rows at a time."""
    import factorflow.stages.build as matrix
    import factorflow.engine.split as split

    monkeypatch.setattr(matrix, "ENCODE_ROWS", 7)
    monkeypatch.setattr(matrix, "SORT_ROWS", 9)
    monkeypatch.setattr(split, "SPLIT_ROWS", 10)


class TestBoundedBuild:
    def test_same_artifacts_as_one_pass(self, tmp_path, small_steps):
        rng = np.random.default_rng(5)
        pairs = rng.permutation([(u, i) for u in range(30) for i in range(12) if (u * i) % 5])
        users = [f"user-{u:02d}" for u in pairs[:, 0]]
        items = pairs[:, 1].astype(np.int64) * 1000
        ratings = rng.integers(1, 6, len(pairs)).astype(np.float32)
        build_matrices(_write(tmp_path, users, items, ratings), tmp_path / "m", seed=2)
        got = load_matrices(tmp_path / "m")
        # One pass: sorted ids, triplets sorted by (user, item), the lexsort split.
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        order = np.lexsort((i, u))
        u, i, r = u[order].astype(np.int32), i[order].astype(np.int32), ratings[order]
        held = reference_split(u, len(user_ids), 0.1, 5, 2)
        assert got.user_ids.to_list() == user_ids.tolist()
        assert got.item_ids.to_list() == item_ids.tolist()
        for part, mask in ((got.train, ~held), (got.valid, held)):
            for field, want in zip(part, (u[mask], i[mask], r[mask])):
                np.testing.assert_array_equal(field, want)
                assert field.dtype == want.dtype

    def test_id_files_keep_their_schema(self, small_ratings_parquet, tmp_path):
        build_matrices(small_ratings_parquet, tmp_path)
        users = pl.read_parquet(tmp_path / "users.parquet")
        assert users.columns == ["user_index", "user_id"]
        assert users["user_index"].dtype == pl.Int32
        assert users["user_index"].to_list() == list(range(users.height))

    def test_progress_lines_go_to_log(self, tmp_path, small_steps):
        path = _write(tmp_path, [1, 2, 3] * 8, list(range(24)), [3.0] * 24)
        lines: list[str] = []
        build_matrices(path, tmp_path / "m", log=lines.append)
        assert lines == ["build: rows encoded 24 / 24 (100.0%) in 0 s",
                         "build: rows sorted 24 / 24 (100.0%) in 0 s",
                         "build: rows split 24 / 24 (100.0%) in 0 s"]

    @pytest.mark.parametrize("column", ["user_id", "item_id"])
    def test_null_ids_are_named(self, tmp_path, column):
        ids = {"user_id": [1, 2, 3], "item_id": [4, 5, 6]}
        ids[column] = [1, None, 3]
        path = _write(tmp_path, ids["user_id"], ids["item_id"], [1.0, 2.0, 3.0])
        with pytest.raises(ValueError, match=f"null {column} in .*validate"):
            build_matrices(path, tmp_path / "m")


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
