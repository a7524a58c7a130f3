"""Host-side Gibbs draws: the Normal–Wishart row prior, the noise precision, row statistics."""

import jax
import numpy as np
import pytest

from factorflow.engine.gibbs import layout
from factorflow.engine.gibbs import priors
from factorflow.engine.gibbs import kernels
from factorflow.engine.losses import squared_error

pytestmark = pytest.mark.unit


def test_normal_wishart_draws_have_the_posterior_moments():
    rng = np.random.default_rng(2)
    d, n, beta0, nu0 = 3, 20, 2.0, 3.0
    x = np.concatenate([rng.normal(0.5, 1.0, (n, d)), np.full((4, d), 9.0)])
    has = np.r_[np.ones(n), np.zeros(4)]                       # padding rows ignored
    w0_inv = np.eye(d) * 0.7
    stats = priors.row_statistics(x, has)
    draws = [priors.normal_wishart_posterior(rng, n, stats, beta0=beta0, nu0=nu0,
                                                  w0_inv=w0_inv) for _ in range(6000)]
    m, lam = (np.stack(a) for a in zip(*draws))
    xs = x[:n]
    xbar, beta_n, nu_n = xs.mean(0), beta0 + n, nu0 + n
    wn_inv = w0_inv + (xs - xbar).T @ (xs - xbar) + beta0 * n / beta_n * np.outer(xbar, xbar)
    np.testing.assert_allclose(lam.mean(0), nu_n * np.linalg.inv(wn_inv), rtol=0.05, atol=0.01)
    np.testing.assert_allclose(m.mean(0), n * xbar / beta_n, atol=0.02)
    want_cov = wn_inv / (beta_n * (nu_n - d - 1))
    # atol: about 3 standard errors of a near-zero covariance entry over 6000 draws.
    np.testing.assert_allclose(np.cov(m.T), want_cov, rtol=0.1, atol=2e-3)
    assert all(np.all(np.linalg.eigvalsh(a) > 0) for a in lam[:50])


def test_no_rows_draw_from_the_prior_and_bad_stats_are_refused():
    rng = np.random.default_rng(0)
    d, nu0 = 2, 4.0
    w0_inv = np.eye(d) * 0.5
    lam = np.stack([priors.normal_wishart_posterior(rng, 0, np.zeros(d + d * d), beta0=1.0,
                                                         nu0=nu0, w0_inv=w0_inv)[1]
                    for _ in range(4000)])
    np.testing.assert_allclose(lam.mean(0), nu0 * np.linalg.inv(w0_inv), rtol=0.06, atol=0.05)
    with pytest.raises(ValueError, match=r"stats must have shape \(6,\)"):
        priors.normal_wishart_posterior(rng, 3, np.zeros(5), beta0=1.0, nu0=nu0,
                                             w0_inv=w0_inv)


def test_noise_precision_is_the_gamma_posterior():
    rng = np.random.default_rng(1)
    draws = np.array([priors.noise_precision(rng, 400, 250.0, shape=1.0, rate=2.0)
                      for _ in range(4000)])
    shape, rate = 1.0 + 200, 2.0 + 125.0
    assert draws.mean() == pytest.approx(shape / rate, rel=0.01)
    assert draws.var() == pytest.approx(shape / rate**2, rel=0.1)


def test_the_half_step_returns_the_statistics_the_draws_take():
    """``half_step``'s stats: Σ x, Σ x xᵀ of its new rows with data, then the deviance."""
    rng = np.random.default_rng(3)
    rank, n_rows, n_other, n = 2, 6, 5, 30
    d = rank + 1
    rows = rng.integers(0, n_rows - 1, n).astype(np.int32)      # the last row has no data
    cols = rng.integers(0, n_other, n).astype(np.int32)
    vals = rng.uniform(1, 5, n).astype(np.float32)
    layout = layout.chunk_layout(rows, cols, vals, n_rows, 16, 4, 3.0)
    obs = layout.pad_obs(rows, cols, vals, 32, 3.0)
    x = rng.normal(0, 0.3, (n_rows, d)).astype(np.float32)
    other = rng.normal(0, 0.3, (n_other, d)).astype(np.float32)
    lam = np.eye(d, dtype=np.float32) * 2.0
    new, cond, stats = jax.jit(kernels.half_step, static_argnames=("rank", "loss"))(
        x, other, np.float32(1.5), lam, np.zeros(d, np.float32),
        rng.standard_normal((n_rows, d), np.float32), layout, obs, np.float32(3.0), rank=rank,
        loss=squared_error)
    new, cond, stats = (np.asarray(a, np.float64) for a in (new, cond, stats))
    np.testing.assert_allclose(stats[:-1], priors.row_statistics(new, layout[4]),
                               rtol=1e-5, atol=1e-5)
    pred = 3.0 + np.sum(new[rows, :rank] * other[cols, :rank], 1) + new[rows, rank] + other[
        cols, rank]
    assert stats[-1] == pytest.approx(np.sum((pred - vals) ** 2), rel=1e-5)
    # The conditional mean solves (Lam + alpha H) mu = alpha (H x - g) + Lam m (m = 0).
    f = np.concatenate([other[cols, :rank], np.ones((n, 1))], 1)
    for q in range(n_rows):
        sel = rows == q
        h = f[sel].T @ f[sel]
        resid = vals[sel] - 3.0 - other[cols[sel], rank]
        want = np.linalg.solve(lam + 1.5 * h, 1.5 * f[sel].T @ resid)
        np.testing.assert_allclose(cond[q], want, rtol=1e-4, atol=1e-5)


def test_the_rows_last_cholesky_and_solve_match_numpy():
    rng = np.random.default_rng(4)
    r, d = 37, 6
    m = rng.normal(size=(r, d, 9))
    a = m @ m.transpose(0, 2, 1) + 0.1 * np.eye(d)
    b = rng.normal(size=(r, d, 2))
    factor = np.asarray(jax.jit(kernels.cholesky)(np.transpose(a, (1, 2, 0)).astype(np.float32)))
    np.testing.assert_allclose(np.transpose(factor, (2, 0, 1)), np.linalg.cholesky(a),
                               rtol=1e-4, atol=1e-4)
    x = jax.jit(kernels.cho_solve)(factor, np.transpose(b, (1, 2, 0)).astype(np.float32))
    np.testing.assert_allclose(np.transpose(np.asarray(x), (2, 0, 1)), np.linalg.solve(a, b),
                               rtol=1e-3, atol=1e-3)
    not_pd = np.transpose(a, (1, 2, 0)).copy()
    not_pd[2, 2, 5] = -1.0
    factor = np.asarray(jax.jit(kernels.cholesky)(not_pd.astype(np.float32)))
    assert np.isnan(factor[:, :, 5]).any() and np.isfinite(factor[:, :, :5]).all()
