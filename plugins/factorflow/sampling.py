"""Random variates, device layout and compiled Gibbs kernels of :mod:`factorflow.bayes`.

Built to compile small: ``jax.random.normal`` (an ``erfinv`` polynomial) and
``jax.random.gamma`` (a rejection ``while`` loop) make large XLA programs, so:

* :func:`normals`: Box–Muller from two uniform arrays;
* :func:`chi2`: the Wilson–Hilferty cube-of-a-normal approximation, very
  close to exact for the large degrees of freedom used here (about the number
  of rows with data for the Wishart draw, of ratings for the noise precision);
* :func:`normal_wishart_posterior`: a Normal–Wishart posterior draw through the
  Bartlett decomposition, from a flat vector of normals.

Randomness is explicit (keys, or normals drawn from one). Keys come from
:func:`rbg_key`: the ``"rbg"`` implementation (XLA's RngBitGenerator, a much
smaller program than threefry) is set per key, never in the global JAX config.

Layout: each side's ratings grouped by row in fixed-size chunks
(:func:`chunk_layout`), every size rounded up by :func:`bucket` so that fits of
similar size reuse the compiled kernels (:func:`padded_shapes`).

Kernels: :func:`row_normal_equations` (per-row ``H``, ``g`` by autodiff of
the loss), :func:`half_step` (one side's hyperparameters, rows and the noise
precision) and :func:`score` (running sums and metrics of the averaged model).
:data:`TRACES` counts how often each was traced (compiled).
"""

from __future__ import annotations

import collections
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular

#: Times each compiled kernel was traced (a Python side effect: runs only when tracing).
TRACES: collections.Counter = collections.Counter()

# Uniforms are drawn in [_TINY, 1): log(u) stays finite in float32.
_TINY = 1e-7


def rbg_key(seed: int) -> jax.Array:
    """A typed PRNG key of the ``"rbg"`` implementation (set locally, not globally)."""
    return jax.random.key(seed, impl="rbg")


def normals(key: jax.Array, n: int) -> jax.Array:
    """``[n]`` float32 standard normals by Box–Muller."""
    m = (n + 1) // 2
    u = jax.random.uniform(key, (2, m), jnp.float32, minval=_TINY, maxval=1.0)
    radius = jnp.sqrt(-2.0 * jnp.log(u[0]))
    angle = 2.0 * jnp.pi * u[1]
    return jnp.concatenate([radius * jnp.cos(angle), radius * jnp.sin(angle)])[:n]


def chi2(df: jax.Array, z: jax.Array) -> jax.Array:
    """Chi-square(``df``) variates from standard normals ``z`` (Wilson–Hilferty).

    ``df * (1 - c + z sqrt(c))**3`` with ``c = 2 / (9 df)``. The cube's base is
    floored just above 0 so that a far-tail ``z`` with a small ``df`` still
    gives a positive (if inexact) value instead of a negative one.
    """
    df = jnp.asarray(df, jnp.float32)
    c = 2.0 / (9.0 * df)
    base = jnp.maximum(1.0 - c + z * jnp.sqrt(c), 1e-3)
    return df * base**3


def gamma_rate(shape: jax.Array, rate: jax.Array, z: jax.Array) -> jax.Array:
    """A Gamma(``shape``, ``rate``) variate from one standard normal ``z``.

    ``chi2(2 shape) / (2 rate)``; meant for a large ``shape`` (here
    ``a0 + n_ratings / 2``).
    """
    return chi2(2.0 * shape, z) / (2.0 * rate)


def normal_wishart_posterior(
    z: jax.Array,
    x: jax.Array,
    has: jax.Array,
    *,
    beta0: float | jax.Array,
    nu0: float | jax.Array,
    w0_inv: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Draw ``(m, Lam)`` from the Normal–Wishart posterior of the rows ``x[has]``.

    Prior ``Lam ~ Wishart(W0, nu0)``, ``m | Lam ~ N(0, (beta0 Lam)^-1)``;
    rows ``x_j ~ N(m, Lam^-1)``. With ``n`` rows, mean ``x̄`` and scatter
    ``S`` the posterior is ``Lam ~ Wishart(W_n, nu0 + n)`` with
    ``W_n^-1 = W0^-1 + S + beta0 n / (beta0 + n) x̄ x̄ᵀ`` and
    ``m | Lam ~ N(n x̄ / (beta0 + n), ((beta0 + n) Lam)^-1)``.

    Args:
        z: ``[D * D + 2 D]`` standard normals: ``D`` for the Bartlett diagonal,
            ``D * D`` for its lower triangle (the upper part is unused), ``D``
            for the mean.
        x: ``[R, D]`` rows.
        has: ``[R]`` float 0/1: which rows are observations (padding and rows
            without data are excluded).
        beta0: prior pseudo-count of the mean.
        nu0: prior degrees of freedom, > D - 1.
        w0_inv: ``[D, D]`` inverse prior scale matrix.

    Returns:
        ``m [D]`` and ``Lam [D, D]``.
    """
    d = x.shape[1]
    n = has.sum()
    xbar = (x * has[:, None]).sum(0) / jnp.maximum(n, 1.0)
    xc = (x - xbar) * has[:, None]
    beta_n = beta0 + n
    lw = jnp.linalg.cholesky(w0_inv + xc.T @ xc + (beta0 * n / beta_n) * jnp.outer(xbar, xbar))
    # Bartlett: A lower triangular, A_ii^2 ~ chi2(nu_n - i), A_ij ~ N(0, 1) below.
    diag = jnp.sqrt(chi2(nu0 + n - jnp.arange(d), z[:d]))
    a = jnp.tril(z[d : d + d * d].reshape(d, d), -1) + jnp.diag(diag)
    # Lw Lwᵀ = W_n^-1, so B = Lw^-T A has B Bᵀ ~ Wishart(W_n, nu_n).
    b = solve_triangular(lw.T, a, lower=False)
    lam = b @ b.T
    # (beta_n Lam)^-1 = Lw A^-T A^-1 Lwᵀ / beta_n: Lw A^-T z has the right covariance.
    noise = lw @ solve_triangular(a.T, z[d + d * d : 2 * d + d * d], lower=False)
    return n * xbar / beta_n + noise / jnp.sqrt(beta_n), lam


# --- Device layout: padded, bucketed shapes the kernels compile for. ---

#: Users and items share one padded shape unless that costs more than this much
#: extra work per sweep (estimated as chunk gathers plus per-row Cholesky flops).
SHARE_MAX_OVERHEAD = 0.5


def bucket(n: int, minimum: int = 32) -> int:
    """``n`` rounded up to the next of 8 sizes per power of two (<= 1/8 padding)."""
    n = max(int(n), minimum)
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


def chunk_layout(rows, cols, vals, n_rows, n_chunks, chunk, pad_value):
    """Each row's ratings in chunks of ``chunk`` (padding has weight 0).

    Returns ``(row [NC], col [NC, C], val [NC, C], weight [NC, C], has [R])``,
    chunks sorted by row; ``has`` marks rows with at least one rating.
    """
    order = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[order], cols[order], vals[order]
    count = np.bincount(rows, minlength=n_rows)
    per_row = -(-count // chunk)
    start = np.cumsum(count) - count
    first_chunk = np.cumsum(per_row) - per_row
    pos = np.arange(rows.shape[0]) - start[rows]
    which, slot = first_chunk[rows] + pos // chunk, pos % chunk
    row = np.full(n_chunks, n_rows - 1, np.int32)  # padding chunks: last row, weight 0
    row[: per_row.sum()] = np.repeat(np.arange(n_rows), per_row)
    col = np.zeros((n_chunks, chunk), np.int32)
    val = np.full((n_chunks, chunk), pad_value, np.float32)
    weight = np.zeros((n_chunks, chunk), np.float32)
    col[which, slot], val[which, slot], weight[which, slot] = cols, vals, 1.0
    return row, col, val, weight, (count > 0).astype(np.float32)


def pad_obs(u, i, r, size, pad_value):
    """``(users, items, ratings, weight)`` padded to ``size`` (weight 0, rating ``pad_value``)."""
    n = r.shape[0]
    pad = lambda a, v: np.concatenate([a, np.full(size - n, v, a.dtype)])  # noqa: E731
    return pad(u, 0), pad(i, 0), pad(r, np.float32(pad_value)), pad(np.ones(n, np.float32), 0)


def padded_shapes(cu, ci, chunk, d):
    """``((R, NC, C) of users, of items)``: padded rows, chunks and chunk size.

    Work per half-step is estimated as ``NC (C + 4) D² + R D³`` (per-rating
    outer products and per-chunk sums, per-row Cholesky). Both sides get one
    shape (one compile) with ``C = chunk`` unless that costs more than
    ``SHARE_MAX_OVERHEAD`` over separate shapes, where each side takes the
    power-of-two ``C <= chunk`` with the least work (few ratings per row, as
    for the items of a long-tail catalog, favour short chunks).
    """
    def shape(c, size):
        return bucket(c.shape[0]), bucket((-(-c // size)).sum()), size

    def cost(r, nc, size):
        return nc * (size + 4) * d * d + r * d**3

    sizes = [1 << j for j in range(2, chunk.bit_length()) if 1 << j < chunk] + [chunk]
    own = [min((shape(c, s) for s in sizes), key=lambda x: cost(*x)) for c in (cu, ci)]
    same = [shape(c, chunk) for c in (cu, ci)]
    shared = tuple(max(a, b) for a, b in zip(*same))
    if 2 * cost(*shared) <= (1 + SHARE_MAX_OVERHEAD) * sum(cost(*s) for s in own):
        return shared, shared
    return tuple(own)


# --- Kernels. ---


def loss_derivatives(loss, pred: jax.Array, target: jax.Array):
    """Per-element ``ℓ'`` and ``ℓ''`` of a per-element loss in ``pred``."""
    grad = jax.grad(lambda p: jnp.sum(loss(p, target)))
    return jax.jvp(grad, (pred,), (jnp.ones_like(pred),))  # diagonal Hessian: H @ 1


@partial(jax.jit, static_argnames=("loss",))
def curvature(pred: jax.Array, target: jax.Array, *, loss) -> jax.Array:
    """Per-element ``ℓ''`` (compiled once per loss)."""
    return loss_derivatives(loss, pred, target)[1]


def row_normal_equations(other, x0, mean, row, col, val, weight, *, n_rows, rank, loss):
    """Per-row ``H [R, D, D]`` and ``g [R, D]`` of ``½ Σ_j loss(pred_j, r_j)`` at ``x0``.

    ``pred_j = mean + x·[y_j[:rank], 1] + y_j[rank]`` with ``y_j = other[col]``:
    ``H = ½ Σ ℓ''_j J_j J_jᵀ``, ``g = ½ Σ ℓ'_j J_j``, ``J_j = d pred_j / dx`` (the
    Gauss–Newton form, exact here since ``pred`` is linear in ``x``). For squared
    error: ``Σ f_j f_jᵀ`` and ``Σ (pred_j - r_j) f_j``, ``f_j = [y_j[:rank], 1]``.

    ``J_j`` depends on the other side's row alone, so ``J`` and ``J Jᵀ`` are
    taken once per row of ``other`` and gathered per rating, one chunk slot at
    a time: XLA:CPU fuses that into one pass over the chunks, where a
    ``[NC, C, D, D]`` product reduced over ``C`` ran 4-5x slower (measured on
    MovieLens 100K, 2-core CPU). The barriers keep ``pred`` and the loss
    derivatives from being recomputed inside that pass.
    """
    feats = jnp.concatenate([other[:, :rank], jnp.ones_like(other[:, :1])], -1)   # [O, D]
    offset = mean + other[:, rank]                                                 # [O]

    def pred_fn(x, f, off):
        return x @ f + off

    jac = jax.vmap(jax.grad(pred_fn), (None, 0, 0))(x0[0], feats, offset)           # [O, D]
    d = jac.shape[1]
    outer = (jac[:, :, None] * jac[:, None, :]).reshape(-1, d * d)                  # [O, D*D]
    pred = jnp.sum(x0[row][:, None, :] * feats[col], -1) + offset[col]              # [NC, C]
    d1, d2 = loss_derivatives(loss, jax.lax.optimization_barrier(pred).reshape(-1),
                              val.reshape(-1))
    live = weight > 0
    d1 = jnp.where(live, 0.5 * d1.reshape(pred.shape), 0.0)
    d2 = jnp.where(live, 0.5 * jnp.maximum(d2.reshape(pred.shape), 0.0), 0.0)
    d1, d2 = jax.lax.optimization_barrier((d1, d2))
    h = sum(outer[col[:, j]] * d2[:, j, None] for j in range(col.shape[1]))         # [NC, D*D]
    g = sum(jac[col[:, j]] * d1[:, j, None] for j in range(col.shape[1]))           # [NC, D]
    return (jax.ops.segment_sum(h, row, n_rows, indices_are_sorted=True).reshape(n_rows, d, d),
            jax.ops.segment_sum(g, row, n_rows, indices_are_sorted=True))


def _predict(x, other, self_idx, other_idx, mean, rank):
    return (mean + jnp.sum(x[self_idx, :rank] * other[other_idx, :rank], -1)
            + x[self_idx, rank] + other[other_idx, rank])


@partial(jax.jit, static_argnames=("rank", "loss"))
def half_step(x, other, alpha, seed, counter, layout, obs, prior, *, rank, loss):
    """Resample one side's hyperparameters and rows given the other side, then alpha.

    Random numbers come from ``fold_in(rbg_key(seed), counter)`` (the key is made
    inside the program, so that a caller needs no eager JAX operation).

    Returns ``(new rows [R, D], their conditional means [R, D], alpha, finite)``,
    ``finite`` False when any new row or alpha is nan/inf.
    """
    TRACES["half_step"] += 1
    row, col, val, weight, has = layout
    self_idx, other_idx, target, obs_weight = obs
    mean, beta0, nu0, w0_inv, a0, b0 = prior
    n_rows, d = x.shape
    z = normals(jax.random.fold_in(rbg_key(seed), counter), n_rows * d + d * d + 2 * d + 1)
    m, lam = normal_wishart_posterior(
        z[n_rows * d : -1], x, has, beta0=beta0, nu0=nu0, w0_inv=w0_inv)
    h, g = row_normal_equations(other, x, mean, row, col, val, weight,
                                n_rows=n_rows, rank=rank, loss=loss)
    lin = (lam @ m)[None] + alpha * (jnp.einsum("rde,re->rd", h, x) - g)
    chol = jnp.linalg.cholesky(lam[None] + alpha * h)
    # P^-1 (b + L z) ~ N(P^-1 b, P^-1) with L Lᵀ = P; solve for sample and mean at once.
    noisy = lin + jnp.einsum("rij,rj->ri", chol, z[: n_rows * d].reshape(n_rows, d))
    sol = jax.scipy.linalg.cho_solve((chol, True), jnp.stack([noisy, lin], -1))
    new = sol[..., 0]
    pred = _predict(new, other, self_idx, other_idx, mean, rank)
    dev = jnp.where(obs_weight > 0, loss(pred, target), 0.0)
    alpha = gamma_rate(a0 + 0.5 * obs_weight.sum(), b0 + 0.5 * dev.sum(), z[-1])
    return new, sol[..., 1], alpha, jnp.isfinite(alpha) & jnp.all(jnp.isfinite(new))


@partial(jax.jit, static_argnames=("loss",))
def score(users, items, sums, keep, has, train, valid, mean, bounds, *, loss):
    """Fold one sample into the running sums; metrics of the averaged model so far.

    Until a sample is kept (``keep`` 0 and no sample yet) the "averaged model"
    is the current sample alone. Predictions are clipped to ``bounds``.
    Returns ``(sums, [train mse, train mean loss, valid mse])``.
    """
    TRACES["score"] += 1
    rank = users.shape[1] - 1
    users, items = users * has[0][:, None], items * has[1][:, None]
    count = sums[2] + keep

    def fold(obs, total):
        u, i, target, w = obs
        pred = _predict(users, items, u, i, mean, rank)
        total = total + keep * pred
        avg = jnp.where(count > 0, total / jnp.maximum(count, 1.0), pred)
        avg = jnp.clip(avg, bounds[0], bounds[1])
        n = jnp.maximum(w.sum(), 1.0)
        mean_loss = jnp.sum(jnp.where(w > 0, loss(avg, target), 0.0)) / n
        return total, jnp.sum(w * jnp.square(avg - target)) / n, mean_loss

    train_sum, train_mse, train_loss = fold(train, sums[0])
    valid_sum, valid_mse, _ = fold(valid, sums[1])
    return (train_sum, valid_sum, count), jnp.stack([train_mse, train_loss, valid_mse])
