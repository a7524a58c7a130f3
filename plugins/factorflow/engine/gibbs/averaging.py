"""Which Gibbs sweeps the published model keeps, and the one model their average is.

:mod:`factorflow.engine.gibbs.sampler` keeps every post-burn-in sweep until ``max_samples``
are kept, then every 2nd (the kept ones thinned to match), every 4th, and so
on (:func:`kept_stride`), and publishes the average of the kept samples as one
:class:`~factorflow.engine.factors.FactorParams` (:func:`average_samples`), its factor
part cut to the few directions that carry it (:func:`best_rank_factors`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from factorflow.engine.factors import FactorParams

#: Share of the averaged factor part's energy (``Σ σ²``, the squared Frobenius
#: norm of its ``[n_users, n_items]`` score matrix) the published model keeps.
KEEP_ENERGY = 0.999


def kept_stride(j: int, max_samples: int) -> int:
    """Keep every ``stride``-th post-burn-in sweep once ``j`` of them have run.

    The smallest power of two with ``j // stride <= max_samples``: every sweep
    is kept until ``max_samples`` are, then every 2nd (the kept ones thinned to
    match), every 4th, and so on. So the averaged model improves from the first
    post-burn-in sweep on, and the kept samples always spread evenly over the
    run so far.
    """
    stride = 1
    while j // stride > max_samples:
        stride *= 2
    return stride


def kept_sweeps(sweeps: int, burn_in: int, max_samples: int) -> np.ndarray:
    """1-based sweeps whose samples the final model averages (see :func:`kept_stride`).

    Every ``s``-th of the ``n = sweeps - burn_in`` post-burn-in sweeps, with
    ``s = kept_stride(n, max_samples)``: between ``max_samples / 2`` and
    ``max_samples`` of them (all of them when ``n <= max_samples``).
    """
    n = sweeps - burn_in
    stride = kept_stride(n, max_samples)
    return burn_in + np.arange(stride, n + 1, stride)


def average_samples(mean, user_samples, item_samples, user_has=None, item_has=None, *,
                    keep_energy: float | None = None) -> FactorParams:
    """One :class:`FactorParams` predicting the average of ``S`` sampled models.

    Args:
        mean: the global offset.
        user_samples: ``[S, n_users, rank + 1]`` rows ``[p_u, b_u]`` per sample.
        item_samples: ``[S, n_items, rank + 1]`` rows ``[q_i, c_i]``.
        user_has, item_has: optional ``[n]`` masks; rows where False are zeroed.
        keep_energy: None keeps all ``S * rank`` columns (the average exactly);
            else the factors are cut by :func:`best_rank_factors`.

    Returns:
        float32 NumPy params with averaged biases and factors ``[n, S * rank]``:
        ``concat_s(p^s) / sqrt(S)`` (so ``<p_u, q_i>`` is the sample average of
        dot products), or ``[n, k]`` with ``keep_energy``.
    """
    out = []
    for samples, has in ((user_samples, user_has), (item_samples, item_has)):
        x = np.asarray(samples, np.float64)
        if has is not None:
            x = x * (np.asarray(has) > 0)[None, :, None]
        s, n, d = x.shape
        factors = x[..., : d - 1].transpose(1, 0, 2).reshape(n, s * (d - 1)) / math.sqrt(s)
        out.append((x[..., d - 1].mean(0).astype(np.float32), factors))
    (ub, uf), (ib, itf) = out
    if keep_energy is not None:
        uf, itf = best_rank_factors(uf, itf, keep_energy=keep_energy)
    return FactorParams(np.float32(mean), ub, ib, uf.astype(np.float32), itf.astype(np.float32))


def _root(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(R [r, D], W [D, r])`` with ``x = (x W) R`` and ``x W`` orthonormal columns.

    From the eigenpairs ``E, Λ`` of the Gram matrix ``xᵀx``: ``R = Λ^½ Eᵀ`` is
    QR's R factor up to a rotation, and ``W = E Λ^-½``. Directions with
    ``λ <= 1e-12 λ_max`` (x is zero along them to rounding) are dropped.
    """
    w, e = np.linalg.eigh(x.T @ x)
    keep = w > max(w.max(), 0.0) * 1e-12
    root = np.sqrt(w[keep])
    return root[:, None] * e[:, keep].T, e[:, keep] / root


def best_rank_factors(u: np.ndarray, v: np.ndarray, *, keep_energy: float = KEEP_ENERGY
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The fewest columns ``k`` whose product keeps ``keep_energy`` of ``u vᵀ``'s energy.

    ``u [n_users, D]`` and ``v [n_items, D]`` (float64) define the scores
    ``u vᵀ``; with ``u = Q_u R_u``, ``v = Q_v R_v`` and ``R_u R_vᵀ = A Σ Bᵀ``,
    the result ``u' = Q_u A_k Σ_k^½``, ``v' = Q_v B_k Σ_k^½`` gives the best
    rank-``k`` approximation of ``u vᵀ`` (Eckart–Young), ``k`` the smallest
    with ``Σ_k σ² >= keep_energy Σ σ²`` (so ``|u vᵀ - u' v'ᵀ|_F² <= (1 -
    keep_energy) |u vᵀ|_F²``); ``keep_energy = 1`` keeps every direction,
    the product exactly.

    Why: the ``S`` samples of a Gibbs model share most of their structure, so
    their ``rank * S`` columns hold a few strong directions and a tail of
    sample-to-sample noise; cutting the tail leaves the held-out accuracy as it
    was (figures in tests/bench/README.md) and makes the published model
    several times narrower (storage, every scoring pass, the warehouse's dot
    products). The R factors come from the
    ``D x D`` Gram matrices (:func:`_root`), not a QR of the tall factors: the
    same span, one matrix product instead of a Householder sweep.

    Returns:
        ``(u' [n_users, k], v' [n_items, k])`` float64, ``1 <= k <= D``.
    """
    if not 0 < keep_energy <= 1:
        raise ValueError(f"keep_energy must be in (0, 1], got {keep_energy}")
    (w_u, a), sigma, (w_v, b) = _product_svd(u, v)
    energy = np.cumsum(sigma**2)
    if not energy.size or energy[-1] <= 0:  # all-zero factors: one zero column says so
        return np.zeros((u.shape[0], 1)), np.zeros((v.shape[0], 1))
    k = min(int(np.searchsorted(energy, keep_energy * energy[-1])) + 1, sigma.size)
    root = np.sqrt(sigma[:k])
    return u @ (w_u @ (a[:, :k] * root)), v @ (w_v @ (b[:, :k] * root))


def top_rank_factors(u: np.ndarray, v: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """The best rank-``rank`` approximation of ``u vᵀ``, split symmetrically.

    Same construction as :func:`best_rank_factors` with ``k`` fixed: ``u' =
    Q_u A_k Σ_k^½``, ``v' = Q_v B_k Σ_k^½``. A warm start
    (:mod:`factorflow.engine.warm`) uses it to start a rank-``rank`` chain or
    optimizer from a published Gibbs model, whose factor width is a few times
    its rank; the symmetric split gives both sides the same scale, as the
    chain's rows have.

    Args:
        u: ``[n_users, D]`` factors.
        v: ``[n_items, D]`` factors.
        rank: columns wanted, >= 1.

    Returns:
        ``(u' [n_users, k], v' [n_items, k])`` float64, ``k = min(rank, rank of
        u vᵀ)`` (fewer than ``rank`` only where the product has fewer
        directions; an all-zero product gives ``k = 0``).
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    if not (np.any(u) and np.any(v)):
        return np.zeros((u.shape[0], 0)), np.zeros((v.shape[0], 0))
    (w_u, a), sigma, (w_v, b) = _product_svd(u, v)
    k = min(rank, int(np.count_nonzero(sigma > sigma[0] * 1e-12)))
    root = np.sqrt(sigma[:k])
    return u @ (w_u @ (a[:, :k] * root)), v @ (w_v @ (b[:, :k] * root))


def _product_svd(u: np.ndarray, v: np.ndarray):
    """``((W_u [D, r], A), σ, (W_v, B))``: ``u vᵀ = (u W_u A) diag(σ) (v W_v B)ᵀ``, σ descending.

    ``u W_u`` and ``v W_v`` have orthonormal columns (:func:`_root`) and
    ``R_u R_vᵀ = A diag(σ) Bᵀ``, so ``u W_u A`` and ``v W_v B`` are the
    product's singular vectors.
    """
    (r_u, w_u), (r_v, w_v) = _root(u), _root(v)
    a, sigma, b_t = np.linalg.svd(r_u @ r_v.T, full_matrices=False)
    return (w_u, a), sigma, (w_v, b_t.T)


class KeptSamples:
    """The kept sweeps' rows and the running sums of their averaged prediction.

    Args:
        fold: ``fold(rows, keep, sums) -> (sums, metrics)``, the compiled score
            (:func:`factorflow.engine.gibbs.kernels.score`): adds ``keep`` times the
            predictions of ``rows`` to ``sums`` and returns the metrics of the
            average so far (of ``rows`` alone while nothing is kept).
        sums: the empty running sums.
        max_samples: see :func:`kept_stride`.
    """

    def __init__(self, fold: Callable, sums: Any, max_samples: int):
        self.fold, self.sums, self.max_samples = fold, sums, max_samples
        self.rows: dict[int, Any] = {}

    def update(self, j: int, current: Any) -> Any:
        """After post-burn-in sweep ``j`` (``j < 1``: burn-in) with rows ``current``.

        Returns:
            The metrics of the averaged model now, or None where it did not change.
        """
        if j < 1:  # burn-in: the "averaged model" is the current one
            self.sums, metrics = self.fold(current, 0, self.sums)
            return metrics
        stride, metrics = kept_stride(j, self.max_samples), None
        dropped = [q for q in self.rows if q % stride]
        for q in dropped:
            del self.rows[q]
        if dropped:  # thinned: the running sums start again from the kept rows
            self.sums = tuple(np.zeros_like(np.asarray(s)) for s in self.sums)
            for q in sorted(self.rows):
                self.sums, metrics = self.fold(self.rows[q], 1, self.sums)
        if j % stride == 0:
            self.rows[j] = current
            self.sums, metrics = self.fold(current, 1, self.sums)
        return metrics

    def samples(self) -> list:
        """The kept rows, oldest first."""
        return [self.rows[q] for q in sorted(self.rows)]
