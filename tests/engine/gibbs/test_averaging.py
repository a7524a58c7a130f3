"""Averaging the kept Gibbs samples: which sweeps are kept, their average, and its cut."""

import numpy as np
import pytest

from factorflow.engine.factors import predict
from factorflow.engine.gibbs.averaging import (
    KEEP_ENERGY,
    average_samples,
    best_rank_factors,
    kept_stride,
    kept_sweeps,
    top_rank_factors,
)

unit = pytest.mark.unit


def np_predict(params, users, items):
    return np.asarray(predict(params, users, items))


@unit
def test_averaged_params_predict_the_sample_average():
    rng = np.random.default_rng(1)
    s, rank, n_u, n_i = 3, 2, 5, 4
    us, its = rng.normal(size=(s, n_u, rank + 1)), rng.normal(size=(s, n_i, rank + 1))
    has_u, has_i = np.array([1, 1, 0, 1, 1]), np.array([1, 0, 1, 1])
    params = average_samples(3.5, us, its, has_u, has_i)
    assert params.user_factors.shape == (n_u, s * rank)
    assert params.item_factors.shape == (n_i, s * rank)
    users, items = np.repeat(np.arange(n_u), n_i), np.tile(np.arange(n_i), n_u)
    us, its = us * has_u[None, :, None], its * has_i[None, :, None]
    each = 3.5 + us[:, users, rank] + its[:, items, rank] + np.sum(
        us[:, users, :rank] * its[:, items, :rank], -1)
    np.testing.assert_allclose(np_predict(params, users, items), each.mean(0), rtol=1e-5, atol=1e-5)
    assert not params.user_factors[2].any() and params.user_bias[2] == 0


class TestBestRankFactors:
    """The cut of the averaged model: Eckart–Young's best rank-k product, k by energy."""

    @unit
    @pytest.mark.parametrize("keep", [1.0, KEEP_ENERGY, 0.99, 0.8])
    def test_best_rank_k_with_the_fewest_columns_keeping_the_energy(self, keep):
        rng = np.random.default_rng(2)
        # 6 samples of a rank-3 model: a shared part plus sample noise, 18 columns
        shared_u, shared_i = rng.normal(size=(40, 3)), rng.normal(size=(30, 3))
        u = np.concatenate([shared_u + 0.2 * rng.normal(size=(40, 3)) for _ in range(6)], 1)
        v = np.concatenate([shared_i + 0.2 * rng.normal(size=(30, 3)) for _ in range(6)], 1)
        cut_u, cut_v = best_rank_factors(u, v, keep_energy=keep)
        k = cut_u.shape[1]
        assert cut_v.shape == (30, k) and 1 <= k <= 18
        sigma = np.linalg.svd(u @ v.T, compute_uv=False)
        energy = np.cumsum(sigma**2) / np.sum(sigma**2)
        assert energy[k - 1] >= keep - 1e-12 and (k == 1 or energy[k - 2] < keep)
        tail = np.sum(sigma[k:] ** 2)
        error = np.sum((u @ v.T - cut_u @ cut_v.T) ** 2)
        assert error == pytest.approx(tail, rel=1e-6, abs=1e-9 * np.sum(sigma**2))
        if keep < 1:
            assert k < 18

    @unit
    def test_identical_samples_cut_to_the_rank_exactly_and_zero_factors_to_one_column(self):
        rng = np.random.default_rng(3)
        p, q = rng.normal(size=(9, 2)), rng.normal(size=(7, 2))
        u, v = np.tile(p, 5) / np.sqrt(5), np.tile(q, 5) / np.sqrt(5)
        cut_u, cut_v = best_rank_factors(u, v, keep_energy=1.0)
        assert cut_u.shape == (9, 2)
        np.testing.assert_allclose(cut_u @ cut_v.T, p @ q.T, atol=1e-12)
        cut_u, cut_v = best_rank_factors(np.zeros((4, 6)), v[:, :6], keep_energy=KEEP_ENERGY)
        assert cut_u.shape == (4, 1) and not cut_u.any() and not (cut_u @ cut_v.T).any()
        with pytest.raises(ValueError, match="keep_energy"):
            best_rank_factors(u, v, keep_energy=0.0)


@unit
@unit
class TestTopRankFactors:
    def test_is_the_truncated_svd_of_the_product_split_evenly(self):
        rng = np.random.default_rng(5)
        u, v = rng.normal(size=(9, 6)), rng.normal(size=(7, 6))
        a, s, bt = np.linalg.svd(u @ v.T)
        for rank in (1, 3):
            u2, v2 = top_rank_factors(u, v, rank)
            assert u2.shape == (9, rank) and v2.shape == (7, rank)
            np.testing.assert_allclose(u2 @ v2.T, (a[:, :rank] * s[:rank]) @ bt[:rank],
                                       atol=1e-10)
            np.testing.assert_allclose(np.linalg.norm(u2, axis=0), np.sqrt(s[:rank]))
            np.testing.assert_allclose(np.linalg.norm(v2, axis=0), np.sqrt(s[:rank]))

    def test_never_more_columns_than_directions(self):
        rng = np.random.default_rng(6)
        u, v = rng.normal(size=(5, 2)) @ np.ones((2, 4)), rng.normal(size=(6, 4))
        assert top_rank_factors(u, v, 3)[0].shape == (5, 1)  # u has rank 1
        assert top_rank_factors(np.zeros((3, 2)), v[:, :2], 2)[0].shape == (3, 0)
        with pytest.raises(ValueError, match="rank must be >= 1"):
            top_rank_factors(u, v, 0)


def test_kept_sweeps_online_and_final():
    assert list(kept_sweeps(60, 2, 16)) == list(range(6, 59, 4))     # stride 4: 14 samples
    assert list(kept_sweeps(6, 2, 16)) == [3, 4, 5, 6]
    assert list(kept_sweeps(18, 2, 16)) == list(range(3, 19))        # exactly 16: all kept
    assert list(kept_sweeps(19, 2, 16)) == list(range(4, 20, 2))     # the 17th thins to 8
    # Online: after each sweep the kept set is every stride-th sweep so far, at most
    # max_samples; it only gains the current sweep (a dropped one never returns),
    # and where it ends is the final model's.
    for n, cap in ((60, 16), (41, 5), (7, 1), (3, 3)):
        kept: set[int] = set()
        for j in range(1, n + 1):
            now = set(range(kept_stride(j, cap), j + 1, kept_stride(j, cap)))
            assert now - kept <= {j} and 0 < len(now) <= cap
            kept = now
        assert sorted(kept) == list(kept_sweeps(n + 2, 2, cap) - 2)
