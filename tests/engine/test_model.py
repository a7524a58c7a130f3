"""FactorModel: known-answer recommendations, filtering, persistence."""

import jax
import numpy as np
import pytest

from factorflow.engine import model as model_module
from factorflow.engine import top_n
from factorflow.engine import factors
from factorflow.engine.triplets import Triplets
from factorflow.engine.model import FORMAT_VERSION, FactorModel
from factorflow.engine import FactorParams, TrainConfig

pytestmark = pytest.mark.unit


def diagonal_model(n: int = 6, n_items: int | None = None) -> FactorModel:
    """User u likes item u most, then u+1, u+2, ... (wrapping around)."""
    n_items = n if n_items is None else n_items
    angles = 2 * np.pi * np.arange(max(n, n_items)) / max(n, n_items)
    circle = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    return FactorModel(
        FactorParams(
            mean=np.float32(3.0),
            user_bias=np.zeros(n, np.float32),
            item_bias=np.zeros(n_items, np.float32),
            user_factors=circle[:n],
            item_factors=circle[:n_items],
        )
    )


def test_top_item_of_user_i_is_item_i():
    model = diagonal_model(6)
    ids, scores = model.recommend(np.arange(6), N=3)
    assert ids.shape == scores.shape == (6, 3)
    assert ids.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(ids[:, 0], np.arange(6))
    np.testing.assert_allclose(scores[:, 0], 4.0, rtol=1e-6)  # mean 3 + |p|^2 = 1
    assert np.all(np.diff(scores, axis=1) <= 0)
    # Equal neighbours at +-60 degrees; both must come before anything farther.
    assert all({int(a), int(b)} == {(u + 1) % 6, (u - 1) % 6} for u, (a, b) in enumerate(ids[:, 1:]))


def test_filter_already_liked_excludes_seen_items():
    model = diagonal_model(6)
    seen = Triplets(np.array([0, 0, 2], np.int32), np.array([0, 1, 2], np.int32),
                    np.ones(3, np.float32))
    ids, _ = model.recommend(np.array([0, 2, 3]), N=2, seen=seen)
    assert ids[0, 0] == 5  # item 0 and item 1 seen: the other neighbour is next
    assert 0 not in ids[0] and 1 not in ids[0]
    assert 2 not in ids[1]
    assert ids[2, 0] == 3  # user 3 saw nothing
    unfiltered, _ = model.recommend(np.array([0]), N=1, seen=seen, filter_already_liked=False)
    assert unfiltered[0, 0] == 0


def test_short_lists_padded_with_minus_one():
    model = diagonal_model(4)
    seen = Triplets(np.zeros(3, np.int32), np.array([0, 1, 2], np.int32), np.ones(3, np.float32))
    ids, scores = model.recommend(np.array([0, 1]), N=6, seen=seen)
    assert ids.shape == (2, 6)
    np.testing.assert_array_equal(ids[0], [3, -1, -1, -1, -1, -1])
    assert np.isfinite(scores[0, 0]) and np.all(scores[0, 1:] == -np.inf)
    assert sorted(ids[1, :4]) == [0, 1, 2, 3] and np.all(ids[1, 4:] == -1)


def test_batches_and_padding_give_the_same_answer():
    rng = np.random.default_rng(0)
    n_users, n_items = 37, 23
    model = FactorModel(
        FactorParams(np.float32(0.5), *(rng.normal(size=s).astype(np.float32)
                                        for s in [(n_users,), (n_items,), (n_users, 4), (n_items, 4)]))
    )
    seen = Triplets(rng.integers(0, n_users, 200).astype(np.int32),
                    rng.integers(0, n_items, 200).astype(np.int32), np.ones(200, np.float32))
    users = np.arange(n_users)
    ids, scores = model.recommend(users, N=5, seen=seen, batch_size=8)
    full, full_scores = model.recommend(users, N=5, seen=seen, batch_size=1024)
    np.testing.assert_array_equal(ids, full)
    np.testing.assert_allclose(scores, full_scores, rtol=1e-6)
    # Against a NumPy brute force.
    p = model.params
    dense = p.mean + p.user_bias[:, None] + p.item_bias[None, :] + p.user_factors @ p.item_factors.T
    dense[seen.users, seen.items] = -np.inf
    np.testing.assert_allclose(scores, -np.sort(-dense, axis=1)[:, :5], rtol=1e-5)


def test_predict_matches_training_predict():
    params = factors.init_params(jax.random.key(1), n_users=9, n_items=7, rank=3, mean=3.2, scale=1.0)
    model = FactorModel(params)
    users, items = np.array([0, 8, 3, 3], np.int32), np.array([6, 0, 2, 2], np.int32)
    got = model.predict(users, items)
    assert got.dtype == np.float32 and got.shape == (4,)
    np.testing.assert_allclose(got, np.asarray(factors.predict(params, users, items)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"items range \[7, 7\] outside \[0, 7\)"):
        model.predict(np.array([0]), np.array([7]))


def test_save_load_roundtrip(tmp_path):
    params = factors.init_params(jax.random.key(2), n_users=5, n_items=4, rank=2, mean=3.7, scale=1.0)
    model = FactorModel(params._replace(user_bias=params.user_bias + 0.25))
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert int(data["format_version"]) == FORMAT_VERSION
    loaded = FactorModel.load(path)
    assert (loaded.n_users, loaded.n_items, loaded.rank) == (5, 4, 2)
    for a, b in zip(model.params, loaded.params):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype == np.float32
    assert loaded.fit_result is None


def test_load_rejects_unknown_version(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, format_version=np.int32(99))
    with pytest.raises(ValueError, match="format version 99"):
        FactorModel.load(path)


def test_fit_keeps_result_and_checks_shapes():
    rng = np.random.default_rng(0)
    train = Triplets(rng.integers(0, 20, 300).astype(np.int32), rng.integers(0, 15, 300).astype(np.int32),
                     rng.uniform(1, 5, 300).astype(np.float32))
    model = FactorModel.fit(train, n_users=20, n_items=15, config=TrainConfig(optimizer="adam", rank=3, epochs=3))
    assert (model.n_users, model.n_items, model.rank) == (20, 15, 3)
    assert model.fit_result.best_epoch == 3 and len(model.fit_result.history) == 3
    bad = model.params._replace(item_bias=np.zeros(14, np.float32))
    with pytest.raises(ValueError, match=r"item_bias has shape \(14,\), expected \(15,\)"):
        FactorModel(bad)
    with pytest.raises(ValueError, match="N must be >= 1"):
        model.recommend(np.array([0]), N=0)
    with pytest.raises(ValueError, match="userids range"):
        model.recommend(np.array([20]))


class TestRepeatedCallsDoNotRecompile:
    def test_recommend_same_batch_size(self):
        model = diagonal_model(6)
        model.recommend(np.array([0, 1, 2]), N=2)
        size = top_n.top_k._cache_size()
        ids, _ = model.recommend(np.array([3, 4, 5]), N=2)
        model.recommend(np.array([5, 0, 1, 2]), N=2)  # 4 rows: the same padded shape
        assert top_n.top_k._cache_size() == size
        np.testing.assert_array_equal(ids[:, 0], [3, 4, 5])

    def test_predict_pads_to_a_power_of_two(self):
        model = diagonal_model(6)
        model.predict(np.array([0, 1, 2], np.int32), np.array([0, 1, 2], np.int32))
        size = model_module._predict._cache_size()
        got = model.predict(np.array([5, 4, 3, 2], np.int32), np.array([5, 0, 3, 1], np.int32))
        assert model_module._predict._cache_size() == size
        np.testing.assert_allclose(got[[0, 2]], 4.0, rtol=1e-6)  # own item: 3 + |p|^2
        assert model.predict(np.zeros(0, np.int32), np.zeros(0, np.int32)).shape == (0,)


class TestSaveLoadExtras:
    def test_config_travels_and_biases_off_stays_off(self, tmp_path):
        rng = np.random.default_rng(1)
        train = Triplets(rng.integers(0, 20, 300).astype(np.int32),
                         rng.integers(0, 15, 300).astype(np.int32),
                         rng.uniform(1, 5, 300).astype(np.float32))
        config = TrainConfig(optimizer="adam", rank=3, epochs=3, biases=False, nonneg=True)
        model = FactorModel.fit(train, n_users=20, n_items=15, config=config)
        assert model.config == config._asdict()
        model.save(tmp_path / "m.npz")
        loaded = FactorModel.load(tmp_path / "m.npz")
        assert loaded.config == config._asdict() and TrainConfig(**loaded.config) == config
        p = loaded.params
        assert p.mean == 0 and not p.user_bias.any() and not p.item_bias.any()
        assert p.user_factors.min() >= 0 and p.item_factors.min() >= 0
        users, items = train.users[:5], train.items[:5]
        np.testing.assert_allclose(loaded.predict(users, items),
                                   np.sum(p.user_factors[users] * p.item_factors[items], 1),
                                   rtol=1e-6)
        assert diagonal_model(3).config is None


def random_model(n_users: int = 37, n_items: int = 23, rank: int = 4, seed: int = 0) -> FactorModel:
    rng = np.random.default_rng(seed)
    return FactorModel(FactorParams(np.float32(3.0), *(
        rng.normal(size=s).astype(np.float32)
        for s in [(n_users,), (n_items,), (n_users, rank), (n_items, rank)])))


class TestChunkedScoring:
    """Small forced chunks (several, the last one ragged) give the one-call answers."""

    def test_predict_in_chunks_equals_one_call_and_numpy(self):
        model = random_model()
        rng = np.random.default_rng(1)
        users, items = rng.integers(0, 37, 1000), rng.integers(0, 23, 1000)
        before = model_module._predict._cache_size()
        chunked = model.predict(users, items, chunk_size=64)  # 15 chunks of 64, then 40
        assert model_module._predict._cache_size() - before <= 2  # 64 and the tail's 64
        whole = model.predict(users, items, chunk_size=4096)
        np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
        p = model.params
        want = p.mean + p.user_bias[users] + p.item_bias[items] + np.sum(
            p.user_factors[users] * p.item_factors[items], 1)
        np.testing.assert_allclose(chunked, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(model.predict(users, items, chunk_size=7), whole,
                                   rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="chunk size must be >= 1"):
            model.predict(users, items, chunk_size=0)

    def test_recommend_default_batch_comes_from_the_budget_and_reports_progress(self):
        model = random_model()
        rng = np.random.default_rng(2)
        seen = Triplets(rng.integers(0, 37, 300).astype(np.int32),
                        rng.integers(0, 23, 300).astype(np.int32), np.ones(300, np.float32))
        done: list[int] = []
        ids, scores = model.recommend(np.arange(37), N=5, seen=seen, batch_size=8,
                                      progress=done.append)
        assert done == [8, 16, 24, 32, 37]  # four full batches and a ragged one
        one_ids, one_scores = model.recommend(np.arange(37), N=5, seen=seen)
        np.testing.assert_array_equal(ids, one_ids)
        np.testing.assert_allclose(scores, one_scores, rtol=1e-6)
        assert not set(ids[0].tolist()) & set(seen.items[seen.users == 0].tolist())


class TestClippedRecommendations:
    def test_scores_on_the_scale_in_the_unclipped_order(self):
        model = random_model(rank=6)  # scores spread well past [2.5, 3.5]
        users = np.arange(37)
        ids, raw = model.recommend(users, N=30, batch_size=8)  # 30 > 23 items: padded slots
        clipped_ids, clipped = model.recommend(users, N=30, batch_size=8, clip=(2.5, 3.5))
        np.testing.assert_array_equal(clipped_ids, ids)  # ranked by the unclipped score
        real = ids >= 0
        assert (raw[real] > 3.5).any() and (raw[real] < 2.5).any()  # the clip bites
        np.testing.assert_array_equal(clipped[real], np.clip(raw[real], 2.5, 3.5))
        assert np.all(clipped[~real] == -np.inf)  # padding stays padding
        assert real[:, :23].all() and np.all(np.diff(clipped[:, :23], axis=1) <= 0)  # best first

    @pytest.mark.parametrize("clip", [(5.0, 1.0), (1.0, np.inf), (np.nan, 5.0)])
    def test_bad_scale_is_refused(self, clip):
        with pytest.raises(ValueError, match="clip must be a finite"):
            random_model().recommend(np.arange(3), N=2, clip=clip)
