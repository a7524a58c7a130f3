"""Which Gibbs sweeps the published model keeps, and the one model their average is.

:mod:`factorflow.bayes` keeps every post-burn-in sweep until ``max_samples``
are kept, then every 2nd (the kept ones thinned to match), every 4th, and so
on (:func:`kept_stride`), and publishes the average of the kept samples as one
:class:`~factorflow.factors.FactorParams` (:func:`average_samples`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from factorflow.factors import FactorParams


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


def average_samples(mean, user_samples, item_samples, user_has=None, item_has=None) -> FactorParams:
    """One :class:`FactorParams` predicting the average of ``S`` sampled models.

    Args:
        mean: the global offset.
        user_samples: ``[S, n_users, rank + 1]`` rows ``[p_u, b_u]`` per sample.
        item_samples: ``[S, n_items, rank + 1]`` rows ``[q_i, c_i]``.
        user_has, item_has: optional ``[n]`` masks; rows where False are zeroed.

    Returns:
        float32 NumPy params with factors ``[n, S * rank]``: ``concat_s(p^s) / sqrt(S)``
        (so ``<p_u, q_i>`` is the sample average of dot products) and averaged biases.
    """
    out = []
    for samples, has in ((user_samples, user_has), (item_samples, item_has)):
        x = np.asarray(samples, np.float64)
        if has is not None:
            x = x * (np.asarray(has) > 0)[None, :, None]
        s, n, d = x.shape
        factors = x[..., : d - 1].transpose(1, 0, 2).reshape(n, s * (d - 1)) / math.sqrt(s)
        out.append((x[..., d - 1].mean(0).astype(np.float32), factors.astype(np.float32)))
    (ub, uf), (ib, itf) = out
    return FactorParams(np.float32(mean), ub, ib, uf, itf)


class KeptSamples:
    """The kept sweeps' rows and the running sums of their averaged prediction.

    Args:
        fold: ``fold(rows, keep, sums) -> (sums, metrics)``, the compiled score
            (:func:`factorflow.sampling.score`): adds ``keep`` times the
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
