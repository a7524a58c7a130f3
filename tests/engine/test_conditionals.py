"""Conditional means of rows from their own ratings: the normal equations, Newton steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine import conditionals
from factorflow.engine.conditionals import RowPrior, RowRatings, conditional_means
from factorflow.engine.fold_in_priors import gradient_spec
from factorflow.engine.losses import huber

pytestmark = pytest.mark.unit

RANK = 3
D = RANK + 1


def _problem(seed=0, n_rows=5, n_other=12, n=30):
    """Random fixed rows ``[n_other, D]``, ratings of ``n_rows`` rows and a random prior."""
    rng = np.random.default_rng(seed)
    other = rng.normal(0, 0.7, (n_other, D)).astype(np.float32)
    rows = np.repeat(np.arange(n_rows), n // n_rows).astype(np.int32)
    cols = rng.integers(0, n_other, rows.shape[0]).astype(np.int32)
    vals = rng.uniform(1, 5, rows.shape[0]).astype(np.float32)
    a = rng.normal(size=(D, D))
    prior = RowPrior(rng.normal(0, 0.3, D), a @ a.T / D + np.eye(D), 0.1 * np.eye(D))
    return other, RowRatings(rows, cols, vals), prior


def _numpy_means(other, mean, ratings, n_rows, prior, alpha):
    """The squared-loss conditional means by the normal equations, in float64 NumPy."""
    out = np.zeros((n_rows, D))
    for r in range(n_rows):
        at = ratings.rows == r
        f = np.concatenate([other[ratings.cols[at], :RANK], np.ones((at.sum(), 1))], 1)
        y = ratings.ratings[at] - mean - other[ratings.cols[at], RANK]
        lam = prior.precision + at.sum() * prior.per_rating
        # alpha/2 * sum (f x - y)^2: gradient alpha (FᵀF x - Fᵀy), curvature alpha FᵀF
        out[r] = np.linalg.solve(lam + alpha * f.T @ f, lam @ prior.mean + alpha * f.T @ y)
    return out


class TestConditionalMeans:
    def test_squared_loss_solves_the_normal_equations(self):
        other, ratings, prior = _problem()
        got = conditional_means(other, 3.0, ratings, n_rows=5, prior=prior, alpha=1.7)
        want = _numpy_means(other, 3.0, ratings, 5, prior, 1.7)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    def test_rows_without_ratings_get_the_prior_mean(self):
        other, ratings, prior = _problem()
        got = conditional_means(other, 3.0, ratings, n_rows=7, prior=prior, alpha=1.0)
        np.testing.assert_allclose(got[5:], np.broadcast_to(prior.mean, (2, D)), atol=1e-5)

    def test_huber_takes_newton_steps_to_the_minimum(self):
        other, ratings, prior = _problem(seed=1)
        other[:, :RANK] *= 2.0  # large residuals: many ratings in huber's linear part
        alpha = 1.3
        got = conditional_means(other, 3.0, ratings, n_rows=5, prior=prior, alpha=alpha,
                                loss="huber")

        def objective(x):  # the row objective, summed over rows, written out directly
            pred = (3.0 + jnp.sum(x[ratings.rows, :RANK] * other[ratings.cols, :RANK], 1)
                    + x[ratings.rows, RANK] + other[ratings.cols, RANK])
            dev = x - prior.mean
            lam = prior.precision + 6 * prior.per_rating  # every row has 6 ratings
            return alpha / 2 * jnp.sum(huber(pred, ratings.ratings)) + 0.5 * jnp.sum(
                dev * (dev @ lam))

        grad = np.asarray(jax.grad(objective)(jnp.asarray(got)))
        assert np.abs(grad).max() < 1e-4
        squared = conditional_means(other, 3.0, ratings, n_rows=5, prior=prior, alpha=alpha)
        assert np.abs(squared - got).max() > 1e-2  # it is not the squared-loss answer

    def test_a_loss_without_curvature_is_refused(self):
        other, ratings, prior = _problem()
        with pytest.raises(ValueError, match="positive curvature"):
            conditional_means(other, 3.0, ratings, n_rows=5, prior=prior, alpha=1.0,
                              loss="absolute")

    def test_biases_off_and_nonneg(self):
        other, ratings, prior = _problem()
        spec = gradient_spec(RANK, dict(reg=0.05, biases=False, nonneg=True))
        got = conditional_means(other, 0.0, ratings, n_rows=5, prior=spec.users,
                                alpha=spec.alpha, biases=False, nonneg=True)
        assert np.all(got[:, RANK] == 0) and np.all(got[:, :RANK] >= 0)
        assert np.any(got[:, :RANK] > 0)

    def test_similar_sizes_reuse_the_compiled_program(self):
        other, ratings, prior = _problem()
        conditional_means(other, 3.0, ratings, n_rows=5, prior=prior, alpha=1.0)
        size = conditionals._solve._cache_size()
        other2, ratings2, prior2 = _problem(seed=3, n_rows=4, n=24)
        conditional_means(other2, 3.0, ratings2, n_rows=4, prior=prior2, alpha=2.0)
        assert conditionals._solve._cache_size() == size

    def test_bad_inputs_are_refused(self):
        other, ratings, prior = _problem()
        with pytest.raises(ValueError, match="cols range"):
            conditional_means(other, 3.0, ratings._replace(cols=ratings.cols + 12), n_rows=5,
                              prior=prior, alpha=1.0)
        with pytest.raises(ValueError, match="rows range"):
            conditional_means(other, 3.0, ratings, n_rows=3, prior=prior, alpha=1.0)
        with pytest.raises(ValueError, match="prior shapes"):
            conditional_means(other, 3.0, ratings, n_rows=5, alpha=1.0,
                              prior=RowPrior(np.zeros(2), np.eye(2), np.eye(2)))
