"""Ids <-> indices: round trips for integer and string ids, unknown ids refused by
name, and the same split as the DAG's build stage."""

from __future__ import annotations

import numpy as np
import pytest

from factorflow.engine.ids import IdIndex, encode_ratings

pytestmark = pytest.mark.unit


class TestIdIndex:
    @pytest.mark.parametrize("ids", [np.array([30, 10, 20]),
                                     np.array(["b-2", "a-1", "c-3"]),
                                     np.array(["b-2", "a-1", "c-3"], dtype=object)])
    def test_round_trip_in_sorted_order(self, ids):
        index = IdIndex(ids)
        assert len(index) == 3
        positions = index.index(ids)
        assert positions.dtype == np.int32
        assert positions.tolist() == np.argsort(np.argsort(ids.astype(str))).tolist()
        assert index.ids(positions).tolist() == [str(i) if ids.dtype.kind == "O" else i
                                                 for i in ids.tolist()]
        assert index.ids(positions.reshape(3, 1)).shape == (3, 1)

    def test_unknown_ids_are_named(self):
        index = IdIndex.from_values(["u1", "u2", "u1"])
        with pytest.raises(ValueError, match=r"2 unknown id\(s\), e.g. \['zz', 'u0'\]"):
            index.index(["u1", "zz", "u0"])
        with pytest.raises(ValueError, match="cannot match"):
            index.index([1, 2])
        with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
            index.ids([0, -1])

    def test_duplicates_are_refused(self):
        with pytest.raises(ValueError, match="1 duplicate"):
            IdIndex(np.array([1, 2, 2]))


def test_encoded_ratings_split_like_the_build_stage(small_ratings_parquet, tmp_path):
    import polars as pl

    from factorflow.stages.build import build_matrices, load_matrices

    table = pl.read_parquet(small_ratings_parquet)
    # shuffled rows: the encoding must not depend on the table's order
    table = table.sample(fraction=1.0, shuffle=True, seed=3)
    data = encode_ratings(table["user_id"].to_numpy(), table["item_id"].to_numpy(),
                          table["rating"].to_numpy())
    train, valid = data.split(0.1, seed=0)
    built = load_matrices(build_matrices(small_ratings_parquet, tmp_path, seed=0)["matrix_dir"])
    assert data.users.ids(np.arange(len(data.users))).tolist() == built.user_ids.to_list()
    assert data.items.ids(np.arange(len(data.items))).tolist() == built.item_ids.to_list()
    for ours, theirs in ((train, built.train), (valid, built.valid)):
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_recommend_by_id_on_a_matrix_with_a_known_answer():
    """Users of group g rate group g's items 5 and the rest 1, each a random half of
    them; every user's top unseen pick, mapped back to ids, is of its own group."""
    from factorflow.engine.model import FactorModel

    rng = np.random.default_rng(0)
    groups, size = 4, 10
    users, items, ratings = [], [], []
    for u in range(groups * size):
        for i in range(groups * size):
            if rng.random() < 0.5:
                users.append(f"user-{u // size}-{u}"), items.append(f"item-{i // size}-{i}")
                ratings.append(5.0 if u // size == i // size else 1.0)
    data = encode_ratings(users, items, ratings)
    model = FactorModel.fit(data.triplets, n_users=len(data.users), n_items=len(data.items))
    asked = np.array(sorted(set(users)))
    picks, _ = model.recommend(data.users.index(asked), N=1, seen=data.triplets)
    named = data.items.ids(picks[:, 0])
    assert [p.split("-")[1] for p in named] == [u.split("-")[1] for u in asked]
    seen = set(zip(users, items))
    assert not any((u, p) in seen for u, p in zip(asked, named))
