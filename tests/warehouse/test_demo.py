"""The demo generator: deterministic, distinct pairs, on the scale, skewed."""

from __future__ import annotations

import numpy as np
import pytest

from factorflow.warehouse.demo import generate_ratings

pytestmark = pytest.mark.unit


def test_deterministic_and_distinct():
    a = generate_ratings(n_users=200, n_items=100, n_ratings=4000, seed=1)
    b = generate_ratings(n_users=200, n_items=100, n_ratings=4000, seed=1)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    pairs = a["user_id"] * 1_000_000 + a["item_id"]
    assert np.unique(pairs).size == 4000


def test_scale_and_popularity_skew():
    d = generate_ratings(n_users=500, n_items=300, n_ratings=20_000, seed=2)
    assert set(np.unique(d["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    counts = np.sort(np.bincount(d["item_id"] - d["item_id"].min()))[::-1]
    assert counts[:30].sum() > 0.25 * counts.sum()  # top 10% of items: over a quarter of ratings


def test_too_dense_is_refused():
    with pytest.raises(ValueError, match="too dense"):
        generate_ratings(n_users=10, n_items=10, n_ratings=80)
