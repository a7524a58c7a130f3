"""Blocked top-N: the same items as ranking every score, seen items dropped."""

import numpy as np
import pytest

from factorflow.engine import top_n
from factorflow.engine.top_n import ITEM_BLOCK, block_items, index_seen, seen_pairs


def brute_force(uf, ub, mean, qf, qb, seen_mask, k):
    scores = mean + ub[:, None] + qb[None, :] + uf @ qf.T
    scores[seen_mask] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("n_items, k", [(3000, 5), (3000, 40), (ITEM_BLOCK * 3 + 7, 10), (50, 10)])
def test_equals_ranking_every_score(n_items, k):
    rng = np.random.default_rng(n_items + k)
    n_users, width = 9, 4
    uf, qf = rng.normal(size=(n_users, width)), rng.normal(size=(n_items, width))
    ub, qb = rng.normal(size=n_users), rng.normal(size=n_items)
    mask = rng.random((n_users, n_items)) < 0.2
    mask[4] = np.arange(n_items) >= 3                      # user 4 saw all but 3 items
    users, items = np.nonzero(mask)
    want_scores, want_ids = brute_force(uf, ub, 0.5, qf, qb, mask, k)
    index = index_seen(users, items, n_users)
    blocked = block_items(0.5, qf.astype(np.float32), qb.astype(np.float32))
    batch = np.arange(n_users, dtype=np.int32)
    rows, cols = seen_pairs(index, batch, n_users)
    assert rows.shape[0] & (rows.shape[0] - 1) == 0          # padded to a power of two
    scores, ids = (np.asarray(a) for a in top_n.top_k(
        uf[batch].astype(np.float32), ub[batch].astype(np.float32), blocked, rows, cols, k=k))
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    live = np.isfinite(want_scores)
    np.testing.assert_array_equal(ids[live], want_ids[live])
    assert np.isfinite(scores[4]).sum() == min(k, 3)        # then -inf slots
    assert not mask[np.arange(n_users)[:, None], np.where(live, ids, 0)][live].any()


def test_no_seen_index_drops_nothing():
    rows, cols = seen_pairs(None, np.arange(3, dtype=np.int32), 3)
    assert rows.tolist() == [3] and cols.tolist() == [0]   # one padding pair, ignored
