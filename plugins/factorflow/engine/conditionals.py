"""Each row's conditional mean given the other side: Newton steps on the row's own objective.

A row ``x = [p, b]`` (``D = k + 1``: a model's ``k`` factors and the bias)
with the other side held fixed minimises::

    alpha/2 * sum_j loss(mean + b + c_j + <p, q_j>, r_j) + 1/2 (x - m)ᵀ Lam_n (x - m)

over its ``n`` ratings ``r_j`` of other-side rows ``j``, with ``Lam_n =
precision + n * per_rating`` (:class:`RowPrior`). The gradient and curvature
of the loss come from autodiff (:func:`factorflow.engine.gibbs.kernels.row_normal_equations`,
the Gibbs sampler's own kernel), so every loss the engine trains with works:
for squared error the system is the ALS normal equations, solved exactly in one
step; for any other loss :func:`conditional_means` takes Newton steps
(negative curvature clamped to 0, as the sampler does), each row keeping the
fraction of its step that lowers its objective most; a loss with no
curvature at all, like absolute error, is refused. :mod:`factorflow.engine.fold_in`
uses it for new users and items.

Ratings are laid out like the sampler's (:func:`factorflow.engine.gibbs.layout.chunk_layout`),
rows and chunks padded to :func:`factorflow.engine.gibbs.layout.bucket` sizes,
so batches of similar size reuse one compiled program.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.gibbs.kernels import curvature, row_normal_equations
from factorflow.engine.gibbs.layout import bucket, chunk_layout
from factorflow.engine.gibbs.linalg import cho_solve, cholesky
from factorflow.engine.losses import DataLoss, resolve_loss, squared_error

#: Ratings per chunk of the fold-in layout (a row's ratings take whole chunks).
CHUNK = 16
#: Newton steps for a loss other than squared error, or with ``nonneg`` (else one is exact).
NEWTON_STEPS = 20


class RowPrior(NamedTuple):
    """The quadratic term of one side's row objective, ``x = [factors, bias]`` (``D = k + 1``).

    Attributes:
        mean: ``[D]`` ``m``, the row a row without ratings gets.
        precision: ``[D, D]`` the part of ``Lam`` every row has.
        per_rating: ``[D, D]`` the part added once per rating of the row (a
            gradient-trained model's penalty is charged per rating).
    """

    mean: np.ndarray
    precision: np.ndarray
    per_rating: np.ndarray


class RowRatings(NamedTuple):
    """Ratings of the rows being folded in, by local row.

    Attributes:
        rows: ``[n]`` int32 row of each rating in ``[0, n_rows)``.
        cols: ``[n]`` int32 index of the rated row of the other side (held fixed).
        ratings: ``[n]`` float32.
    """

    rows: np.ndarray
    cols: np.ndarray
    ratings: np.ndarray


def side_rows(factors: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``[n, k + 1]`` float32 rows ``[factors, bias]`` of one side of a model."""
    return np.concatenate([np.asarray(factors, np.float32),
                           np.asarray(bias, np.float32)[:, None]], 1)


#: Fractions of the Newton step tried per row; each row keeps the best (or stays).
STEP_SIZES = (1.0, 0.5, 0.25, 0.125)


def _row_objectives(x, other, mean, layout, lam, m, alpha, *, rank, loss):
    """``[R]`` each row's ``alpha/2 Σ loss + ½ (x - m)ᵀ Lam (x - m)`` at rows ``x [R, D]``."""
    row, col, val, weight = layout
    pred = (mean + jnp.sum(x[row][:, None, :rank] * other[col][..., :rank], -1)
            + x[row][:, None, rank] + other[col][..., rank])                      # [NC, C]
    data = jnp.where(weight > 0, loss(pred.reshape(-1), val.reshape(-1)).reshape(pred.shape), 0)
    per_row = jax.ops.segment_sum(data.sum(1), row, x.shape[0], indices_are_sorted=True)
    dev = x - m[None]
    return 0.5 * alpha * per_row + 0.5 * jnp.sum(dev * jnp.sum(lam * dev[:, None, :], -1), -1)


@partial(jax.jit, static_argnames=("rank", "loss", "steps", "nonneg"))
def _solve(other, mean, layout, counts, prior, alpha, free, *, rank, loss, steps, nonneg):
    """``[R, D]`` rows after ``steps`` Newton steps from the prior mean (all rows at once).

    Each step solves ``(Lam_n + alpha H) x' = Lam_n m + alpha (H x - g)`` with
    ``H``, ``g`` of ``½ Σ loss`` at ``x``: the Newton step of the row objective,
    exact in one step for squared error. With more than one step each row
    moves by the fraction in :data:`STEP_SIZES` that lowers its objective most
    (or not at all): a full Newton step can overshoot where the curvature
    drops (Huber's linear part) and cycle. ``free [D]`` zeroes the bias's part
    of ``H`` and ``g`` when the model has none, so ``Lam``'s unit bias entry keeps it at 0.
    """
    row, col, val, weight = layout
    m, p0, p1 = prior
    n_rows = counts.shape[0]
    lam = p0[None] + counts[:, None, None] * p1[None]                             # [R, D, D]
    mask = free[:, None] * free[None, :]
    factor_part = jnp.arange(rank + 1) < rank
    objective = partial(_row_objectives, other=other, mean=mean, layout=layout, lam=lam, m=m,
                        alpha=alpha, rank=rank, loss=loss)

    def project(x):
        return jnp.where(factor_part[None] & nonneg, jnp.maximum(x, 0.0), x)

    def step(_, x):
        h, g = row_normal_equations(other, x, mean, row, col, val, weight,
                                    n_rows=n_rows, rank=rank, loss=loss)
        h, g = h * mask[None], g * free[None]
        lin = jnp.sum(lam * m[None, None, :], -1) + alpha * (jnp.sum(h * x[:, None, :], -1) - g)
        chol = cholesky(jnp.transpose(lam + alpha * h, (1, 2, 0)))                # [D, D, R]
        newton = cho_solve(chol, lin.T[:, None, :])[:, 0].T                       # [R, D]
        if steps == 1:
            return project(newton)
        tried = [x] + [project(x + t * (newton - x)) for t in STEP_SIZES]
        best = jnp.argmin(jnp.stack([objective(c) for c in tried]), 0)           # [R]
        return jnp.take_along_axis(jnp.stack(tried), best[None, :, None], 0)[0]

    return jax.lax.fori_loop(0, steps, step, jnp.broadcast_to(m, (n_rows, rank + 1)))


def conditional_means(other: np.ndarray, mean: float, ratings: RowRatings, *, n_rows: int,
                      prior: RowPrior, alpha: float, loss: str | DataLoss = "squared",
                      biases: bool = True, nonneg: bool = False,
                      steps: int | None = None) -> np.ndarray:
    """Each row's minimiser of its own objective, the other side held fixed.

    Works for any rows, new or not: re-folding a training user with the
    model's spec reproduces (a gradient model) or approximates (a Gibbs
    model) its row.

    Args:
        other: ``[O, D]`` the fixed side's rows ``[factors, bias]`` (:func:`side_rows`).
        mean: the model's global offset.
        ratings: the rows' ratings; ``cols`` index ``other``.
        n_rows: rows to return; a row without ratings gets ``prior.mean``.
        prior: the rows' :class:`RowPrior` (``D = other.shape[1]``).
        alpha: the data term's weight.
        loss: the training loss (name, ``module:function`` or the function).
        biases: False keeps the bias column at 0.
        nonneg: clip the factors at 0 after each step (projected Newton steps).
        steps: Newton steps; default 1 for squared error without ``nonneg``,
            else :data:`NEWTON_STEPS`.

    Returns:
        ``[n_rows, D]`` float32 rows ``[factors, bias]``.

    Raises:
        ValueError: inconsistent shapes, an index out of range, or a loss
            without curvature.
    """
    other = np.asarray(other, np.float32)
    d = other.shape[1]
    rows, cols, vals = (np.asarray(a, t) for a, t in zip(ratings, (np.int32, np.int32,
                                                                   np.float32)))
    _check_inputs(rows, cols, vals, n_rows, other.shape[0], prior, d)
    if n_rows == 0:
        return np.zeros((0, d), np.float32)
    fn = resolve_loss(loss)
    _check_curvature(fn)
    exact = fn is squared_error and not nonneg  # one Newton step solves it
    steps = (1 if exact else NEWTON_STEPS) if steps is None else steps
    padded = bucket(n_rows + 1, minimum=8)  # at least one padding row takes the padding chunks
    counts = np.bincount(rows, minlength=padded).astype(np.float32)
    n_chunks = bucket(int((-(-counts // CHUNK)).sum()) + 1, minimum=8)
    layout = chunk_layout(rows, cols, vals, padded, n_chunks, CHUNK, float(mean))[:4]
    free = np.ones(d, np.float32)
    free[-1] = float(biases)
    out = _solve(other, np.float32(mean), layout, counts,
                 tuple(np.asarray(a, np.float32) for a in prior), np.float32(alpha), free,
                 rank=d - 1, loss=fn, steps=steps, nonneg=nonneg)
    return np.asarray(out)[:n_rows]


def _check_inputs(rows, cols, vals, n_rows, n_other, prior, d) -> None:
    if not rows.shape == cols.shape == vals.shape or rows.ndim != 1:
        raise ValueError(f"rows {rows.shape}, cols {cols.shape} and ratings {vals.shape} "
                         "must be 1-D of one length")
    for name, idx, limit in (("rows", rows, n_rows), ("cols", cols, n_other)):
        if idx.size and (idx.min() < 0 or idx.max() >= limit):
            raise ValueError(f"{name} range [{idx.min()}, {idx.max()}] outside [0, {limit})")
    shapes = tuple(np.shape(a) for a in prior)
    if shapes != ((d,), (d, d), (d, d)):
        raise ValueError(f"prior shapes {shapes} do not fit rows of width {d}")


def _check_curvature(loss: DataLoss) -> None:
    if loss is squared_error:
        return
    pred, target = np.array([3.2, 1.0, 4.5, 2.0, 3.0], np.float32), np.full(5, 3.0, np.float32)
    if not np.any(np.asarray(curvature(pred, target, loss=loss)) > 0):
        raise ValueError("fold-in needs a loss with positive curvature in pred (Newton steps), "
                         "e.g. squared or huber; this model's loss has none")
