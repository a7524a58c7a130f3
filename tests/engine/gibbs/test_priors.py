"""Host-side Gibbs draws: the Normal–Wishart row prior, the noise precision, row statistics."""

import numpy as np
import pytest

from factorflow.engine.gibbs import priors

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
