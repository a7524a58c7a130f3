"""Metrics and the bias-only baseline."""

import numpy as np
import pytest

from factorflow.evaluation import (
    BaselineParams,
    fit_baseline,
    mae,
    predict_baseline,
    regression_metrics,
    rmse,
)
from factorflow.matrix import Triplets

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
