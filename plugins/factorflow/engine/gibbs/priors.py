"""The Gibbs sampler's global draws, in NumPy on the host: Normal–Wishart row priors, noise.

:mod:`factorflow.engine.gibbs.sampler` resamples every row of a side in one compiled program
(:func:`factorflow.engine.gibbs.kernels.half_step`); what is left per half-step is a
``D x D`` Normal–Wishart draw of that side's row prior and one Gamma draw of the
noise precision, from sufficient statistics the program returns (``D + D² + 1``
numbers). They cost microseconds in NumPy (exact chi-square and Gamma variates,
float64), and kept out of the compiled program they make it a quarter smaller,
which a new process pays for when it loads the program.

Everything here takes its generator explicitly: a fit's draws follow from its seed.
"""

from __future__ import annotations

import numpy as np


def row_statistics(x: np.ndarray, has: np.ndarray) -> np.ndarray:
    """``[D + D²]`` sufficient statistics ``(Σ x, Σ x xᵀ)`` of the rows ``x[has > 0]``.

    The same layout :func:`factorflow.engine.gibbs.kernels.half_step` returns for its new rows.

    Args:
        x: ``[R, D]`` rows.
        has: ``[R]`` 0/1 weights: which rows are observations.
    """
    xs = np.asarray(x, np.float64) * (np.asarray(has) > 0)[:, None]
    return np.concatenate([xs.sum(0), (xs.T @ xs).reshape(-1)])


def normal_wishart_posterior(rng: np.random.Generator, n: int, stats: np.ndarray, *,
                             beta0: float, nu0: float,
                             w0_inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``(m, Lam)`` from the Normal–Wishart posterior of ``n`` rows.

    Prior ``Lam ~ Wishart(W0, nu0)``, ``m | Lam ~ N(0, (beta0 Lam)^-1)``;
    rows ``x_j ~ N(m, Lam^-1)``. With mean ``x̄`` and scatter ``S`` of the rows
    the posterior is ``Lam ~ Wishart(W_n, nu0 + n)`` with
    ``W_n^-1 = W0^-1 + S + beta0 n / (beta0 + n) x̄ x̄ᵀ`` and
    ``m | Lam ~ N(n x̄ / (beta0 + n), ((beta0 + n) Lam)^-1)``. ``Lam`` is drawn
    by the Bartlett decomposition with exact chi-square variates.

    Args:
        rng: the fit's generator.
        n: rows with data (``n = 0`` draws from the prior).
        stats: ``[D + D²]`` ``(Σ x, Σ x xᵀ)`` of those rows (:func:`row_statistics`).
        beta0: prior pseudo-count of the mean.
        nu0: prior degrees of freedom, > D - 1.
        w0_inv: ``[D, D]`` inverse prior scale matrix.

    Returns:
        float64 ``m [D]`` and ``Lam [D, D]``.

    Raises:
        ValueError: ``stats`` has the wrong length for ``w0_inv``.
    """
    d = w0_inv.shape[0]
    stats = np.asarray(stats, np.float64)
    if stats.shape != (d + d * d,):
        raise ValueError(f"stats must have shape ({d + d * d},) for D = {d}, got {stats.shape}")
    xbar = stats[:d] / max(n, 1)
    scatter = stats[d:].reshape(d, d) - n * np.outer(xbar, xbar)
    beta_n, nu_n = beta0 + n, nu0 + n
    wn_inv = w0_inv + scatter + (beta0 * n / beta_n) * np.outer(xbar, xbar)
    wn_inv = 0.5 * (wn_inv + wn_inv.T)
    lw = np.linalg.cholesky(wn_inv)                       # Lw Lwᵀ = W_n^-1
    # Bartlett: A lower triangular, A_ii² ~ chi2(nu_n - i), A_ij ~ N(0, 1) below.
    a = np.tril(rng.standard_normal((d, d)), -1) + np.diag(
        np.sqrt(rng.chisquare(nu_n - np.arange(d))))
    b = np.linalg.solve(lw.T, a)                          # B Bᵀ ~ Wishart(W_n, nu_n)
    lam = b @ b.T
    # (beta_n Lam)^-1 = Lw A^-T A^-1 Lwᵀ / beta_n: Lw A^-T z has that covariance.
    noise = lw @ np.linalg.solve(a.T, rng.standard_normal(d))
    return n * xbar / beta_n + noise / np.sqrt(beta_n), lam


def noise_precision(rng: np.random.Generator, n: int, deviance: float, *,
                    shape: float, rate: float) -> float:
    """Draw the noise precision ``alpha ~ Gamma(shape + n / 2, rate + deviance / 2)``.

    Args:
        rng: the fit's generator.
        n: observed ratings.
        deviance: ``Σ loss(pred, r)`` over them (``Σ (pred - r)²`` for squared error).
        shape, rate: the Gamma prior (rate form).
    """
    return float(rng.gamma(shape + 0.5 * n, 1.0 / (rate + 0.5 * max(float(deviance), 0.0))))
