"""Metrics and the bias-only baseline."""

import numpy as np
import pytest

from factorflow.engine.metrics import (
    BaselineParams,
    chunked_metrics,
    fit_baseline,
    mae,
    ndcg_at_k,
    precision_at_k,
    predict_baseline,
    ranking_metrics,
    recall_at_k,
    regression_metrics,
    relevant_items,
    rmse,
)
from factorflow.engine.triplets import Triplets
from tests.helpers import synthetic

pytestmark = pytest.mark.unit


def test_metrics_by_hand():
    pred = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    target = np.array([2.0, 2.0, 1.0, 4.0], np.float32)
    # errors -1, 0, 2, 0: squared mean 5/4, absolute mean 3/4
    assert rmse(pred, target) == pytest.approx(np.sqrt(1.25))
    assert mae(pred, target) == pytest.approx(0.75)
    assert regression_metrics(pred, target) == {
        "rmse": pytest.approx(np.sqrt(1.25)), "mae": pytest.approx(0.75), "n": 4
    }
    assert isinstance(rmse(pred, target), float)


class TestChunkedMetrics:
    """A split scored a chunk at a time gives the whole split's metrics."""

    def test_equals_the_whole_split_with_several_ragged_chunks(self):
        data = synthetic(n_users=20, n_items=10, n=130)[0]  # 117 training ratings
        table = np.random.default_rng(0).normal(3, 1, (20, 10)).astype(np.float32)
        calls: list[int] = []

        def predict(users, items):
            calls.append(len(users))
            return table[users, items]

        done: list[int] = []
        got = chunked_metrics(predict, data, chunk_size=16, progress=done.append)
        want = regression_metrics(table[data.users, data.items], data.ratings)
        assert got["n"] == want["n"] == 117
        assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-12)
        assert got["mae"] == pytest.approx(want["mae"], rel=1e-12)
        assert calls == [16] * 7 + [5] and done == [16, 32, 48, 64, 80, 96, 112, 117]

    def test_checks(self):
        empty = Triplets(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
        with pytest.raises(ValueError, match="no predictions"):
            chunked_metrics(lambda u, i: u, empty, chunk_size=4)
        one = Triplets(np.zeros(1, np.int32), np.zeros(1, np.int32), np.ones(1, np.float32))
        with pytest.raises(ValueError, match="chunk size must be >= 1"):
            chunked_metrics(lambda u, i: u, one, chunk_size=0)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="differ in shape"):
        rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no predictions"):
        mae(np.zeros(0), np.zeros(0))


def biased_ratings(seed=0, n_users=50, n_items=40, n=1500):
    rng = np.random.default_rng(seed)
    bu, bi = rng.normal(0, 0.6, n_users), rng.normal(0, 0.8, n_items)
    u = rng.integers(0, n_users, n).astype(np.int32)
    i = rng.integers(0, n_items, n).astype(np.int32)
    r = (3.5 + bu[u] + bi[i] + rng.normal(0, 0.3, n)).astype(np.float32)
    return Triplets(u, i, r)


def test_baseline_beats_global_mean():
    data = biased_ratings()
    train, test = (Triplets(*(a[s] for a in data)) for s in (slice(0, 1200), slice(1200, None)))
    params = fit_baseline(train, n_users=50, n_items=40)
    assert isinstance(params, BaselineParams)
    pred = predict_baseline(params, test.users, test.items)
    assert pred.dtype == np.float32 and pred.shape == (300,)
    mean_rmse = rmse(np.full(300, train.ratings.mean()), test.ratings)
    assert rmse(pred, test.ratings) < 0.7 * mean_rmse


def test_baseline_without_damping_on_one_user_is_exact():
    # One user, items rated once each: item biases absorb everything.
    train = Triplets(np.zeros(3, np.int32), np.arange(3, dtype=np.int32),
                     np.array([1.0, 3.0, 5.0], np.float32))
    params = fit_baseline(train, n_users=1, n_items=4, reg_user=0.0, reg_item=0.0)
    assert params.mean == pytest.approx(3.0)
    np.testing.assert_allclose(predict_baseline(params, train.users, train.items), train.ratings, atol=1e-5)
    assert params.item_bias[3] == 0.0  # unrated item


def test_baseline_damping_shrinks_biases():
    train = biased_ratings(n=300)
    loose = fit_baseline(train, n_users=50, n_items=40, reg_user=0.0, reg_item=0.0)
    tight = fit_baseline(train, n_users=50, n_items=40, reg_user=100.0, reg_item=100.0)
    assert np.abs(tight.item_bias).sum() < 0.5 * np.abs(loose.item_bias).sum()


def test_baseline_input_checks():
    train = biased_ratings(n=10)
    with pytest.raises(ValueError, match="indexes past"):
        fit_baseline(train, n_users=2, n_items=40)
    with pytest.raises(ValueError, match="no ratings"):
        fit_baseline(Triplets(*(a[:0] for a in train)), n_users=50, n_items=40)


# Three users' top-4 lists (-1 = empty slot) and their relevant held-out items.
RECOMMENDED = np.array([[10, 11, 12, 13], [20, 21, -1, -1], [30, 31, 32, 33]], np.int32)
RELEVANT = [{11, 13, 99}, {20}, set()]
D1, D3 = 1 / np.log2(3), 1 / np.log2(5)  # discounts of positions 2 and 4 (1-based)


class TestPrecisionAtK:
    def test_by_hand(self):
        # k=3: one hit in each of the first two lists; the empty slot never counts.
        np.testing.assert_allclose(precision_at_k(RECOMMENDED, RELEVANT, k=3), [1 / 3, 1 / 3, 0])
        np.testing.assert_allclose(precision_at_k(RECOMMENDED, RELEVANT, k=4), [2 / 4, 1 / 4, 0])

    def test_checks(self):
        with pytest.raises(ValueError, match=r"k must be in \[1, 4\]"):
            precision_at_k(RECOMMENDED, RELEVANT, k=5)
        with pytest.raises(ValueError, match="3 rows of recommendations but 2 relevant sets"):
            precision_at_k(RECOMMENDED, RELEVANT[:2], k=2)
        with pytest.raises(ValueError, match=r"\[b, K\]"):
            precision_at_k(RECOMMENDED[0], RELEVANT, k=2)


class TestRecallAtK:
    def test_by_hand(self):
        got = recall_at_k(RECOMMENDED, RELEVANT, k=3)
        np.testing.assert_allclose(got[:2], [1 / 3, 1.0])
        assert np.isnan(got[2])  # no relevant items: undefined, not 0
        np.testing.assert_allclose(recall_at_k(RECOMMENDED, RELEVANT, k=4)[:2], [2 / 3, 1.0])


class TestNdcgAtK:
    def test_by_hand(self):
        # User 0, k=4: hits at positions 2 and 4 -> DCG = 1/log2(3) + 1/log2(5) = 1.0616.
        # Ideal: its 3 relevant items first -> 1 + 1/log2(3) + 1/log2(4) = 2.1309.
        # NDCG = 1.0616 / 2.1309 = 0.4982. User 1: its only item first -> 1.
        got = ndcg_at_k(RECOMMENDED, RELEVANT, k=4)
        np.testing.assert_allclose(got[:2], [(D1 + D3) / (1 + D1 + 0.5), 1.0])
        assert got[0] == pytest.approx(0.4982, abs=1e-4)
        assert np.isnan(got[2])
        # k=2: user 0's ideal list holds only min(2, 3) = 2 items.
        np.testing.assert_allclose(ndcg_at_k(RECOMMENDED, RELEVANT, k=2)[0], D1 / (1 + D1))


class TestRelevantItems:
    def test_threshold_and_users_without_ratings(self):
        heldout = Triplets(np.array([0, 0, 1, 2], np.int32), np.array([5, 6, 7, 8], np.int32),
                           np.array([4.5, 2.0, 4.0, 3.9], np.float32))
        assert relevant_items(heldout, np.array([0, 1, 2, 3])) == [{5, 6}, {7}, {8}, set()]
        assert relevant_items(heldout, np.array([2, 0]), threshold=4.0) == [set(), {5}]


class TestRankingMetrics:
    def test_means_over_users_with_relevant_items(self):
        got = ranking_metrics(RECOMMENDED, RELEVANT, k=4)
        assert got == {
            "precision_at_k": pytest.approx((2 / 4 + 1 / 4) / 2),
            "recall_at_k": pytest.approx((2 / 3 + 1) / 2),
            "ndcg_at_k": pytest.approx(((D1 + D3) / (1 + D1 + 0.5) + 1) / 2),
            "k": 4,
            "n_users": 2,
        }

    def test_from_heldout_ratings_with_threshold(self):
        # Rows are users 7, 3, 5; relevant = rated >= 4: user 7 -> {11, 13}, user 3 -> {20}.
        heldout = Triplets(np.array([7, 7, 7, 3, 3], np.int32),
                           np.array([11, 13, 12, 20, 21], np.int32),
                           np.array([5.0, 4.0, 2.0, 4.5, 1.0], np.float32))
        got = ranking_metrics(RECOMMENDED, heldout, k=2, users=np.array([7, 3, 5]), threshold=4)
        assert got["n_users"] == 2
        assert got["precision_at_k"] == pytest.approx((1 / 2 + 1 / 2) / 2)
        assert got["recall_at_k"] == pytest.approx((1 / 2 + 1) / 2)
        assert got["ndcg_at_k"] == pytest.approx((D1 / (1 + D1) + 1) / 2)
        with pytest.raises(ValueError, match=r"users must be \[3\]"):
            ranking_metrics(RECOMMENDED, heldout, k=2, users=np.array([7]))
