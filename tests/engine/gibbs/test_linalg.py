"""The rows-last batched Cholesky factor and solve of the Gibbs half-step."""

import jax
import numpy as np
import pytest

from factorflow.engine.gibbs.linalg import cho_solve, cholesky

pytestmark = pytest.mark.unit


def test_the_rows_last_cholesky_and_solve_match_numpy():
    rng = np.random.default_rng(4)
    r, d = 37, 6
    m = rng.normal(size=(r, d, 9))
    a = m @ m.transpose(0, 2, 1) + 0.1 * np.eye(d)
    b = rng.normal(size=(r, d, 2))
    factor = np.asarray(jax.jit(cholesky)(np.transpose(a, (1, 2, 0)).astype(np.float32)))
    np.testing.assert_allclose(np.transpose(factor, (2, 0, 1)), np.linalg.cholesky(a),
                               rtol=1e-4, atol=1e-4)
    x = jax.jit(cho_solve)(factor, np.transpose(b, (1, 2, 0)).astype(np.float32))
    np.testing.assert_allclose(np.transpose(np.asarray(x), (2, 0, 1)), np.linalg.solve(a, b),
                               rtol=1e-3, atol=1e-3)
    not_pd = np.transpose(a, (1, 2, 0)).copy()
    not_pd[2, 2, 5] = -1.0
    factor = np.asarray(jax.jit(cholesky)(not_pd.astype(np.float32)))
    assert np.isnan(factor[:, :, 5]).any() and np.isfinite(factor[:, :, :5]).all()
