"""The compiled Gibbs kernels: autodiff normal equations and the half-step's statistics."""

from functools import partial

import jax
import numpy as np
import pytest

from factorflow.engine.gibbs import layout, priors
from factorflow.engine.gibbs.kernels import half_step, row_normal_equations
from factorflow.engine.losses import resolve_loss, squared_error

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("loss, half_weight", [("squared", 1.0), ("huber", 0.5)])
def test_autodiff_normal_equations_are_the_als_ones(loss, half_weight):
    """H = Σ f fᵀ, g = Σ (pred - r) f (f = [q_j, 1]) for squared error, at 0 and elsewhere.

    Huber (½ r² near the target, all residuals below its delta here) is half of that.
    """
    rng = np.random.default_rng(0)
    rank, n_rows, n_other, n = 3, 5, 7, 23
    rows, cols = rng.integers(0, n_rows - 1, n), rng.integers(0, n_other, n)  # last row: no data
    # Small values keep every residual below Huber's delta (1): its quadratic part.
    vals = rng.uniform(2.8, 3.2, n).astype(np.float32)
    other = rng.uniform(-0.1, 0.1, (n_other, rank + 1)).astype(np.float32)
    # Chunks of 3 ratings: most rows span several; padding chunks too (16 in all).
    chunks = layout.chunk_layout(rows, cols, vals, n_rows, 16, 3, 3.0)
    fn = jax.jit(partial(row_normal_equations, n_rows=n_rows, rank=rank,
                         loss=resolve_loss(loss)))
    for x0 in (np.zeros((n_rows, rank + 1), np.float32),
               rng.uniform(-0.1, 0.1, (n_rows, rank + 1)).astype(np.float32)):
        h, g = (np.asarray(a, np.float64) for a in fn(other, x0, 3.0, *chunks[:4]))
        f = np.concatenate([other[cols, :rank], np.ones((n, 1))], 1)
        pred = 3.0 + np.sum(x0[rows] * f, 1) + other[cols, rank]
        want_h, want_g = np.zeros((n_rows, rank + 1, rank + 1)), np.zeros((n_rows, rank + 1))
        np.add.at(want_h, rows, f[:, :, None] * f[:, None, :])
        np.add.at(want_g, rows, (pred - vals)[:, None] * f)
        np.testing.assert_allclose(h, half_weight * want_h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(g, half_weight * want_g, rtol=1e-5, atol=1e-5)
        assert not h[-1].any() and not g[-1].any()


def test_the_half_step_returns_the_statistics_the_draws_take():
    """``half_step``'s stats: Σ x, Σ x xᵀ of its new rows with data, then the deviance."""
    rng = np.random.default_rng(3)
    rank, n_rows, n_other, n = 2, 6, 5, 30
    d = rank + 1
    rows = rng.integers(0, n_rows - 1, n).astype(np.int32)      # the last row has no data
    cols = rng.integers(0, n_other, n).astype(np.int32)
    vals = rng.uniform(1, 5, n).astype(np.float32)
    chunks = layout.chunk_layout(rows, cols, vals, n_rows, 16, 4, 3.0)
    obs = layout.pad_obs(rows, cols, vals, 32, 3.0)
    x = rng.normal(0, 0.3, (n_rows, d)).astype(np.float32)
    other = rng.normal(0, 0.3, (n_other, d)).astype(np.float32)
    lam = np.eye(d, dtype=np.float32) * 2.0
    new, cond, stats = jax.jit(half_step, static_argnames=("rank", "loss"))(
        x, other, np.float32(1.5), lam, np.zeros(d, np.float32),
        rng.standard_normal((n_rows, d), np.float32), chunks, obs, np.float32(3.0), rank=rank,
        loss=squared_error)
    new, cond, stats = (np.asarray(a, np.float64) for a in (new, cond, stats))
    np.testing.assert_allclose(stats[:-1], priors.row_statistics(new, chunks[4]),
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
