"""The compiled Gibbs kernels of :mod:`factorflow.engine.gibbs.sampler`, and how a fit loads them.

Built to load small: a new process pays per XLA instruction to load a stored
program (:mod:`factorflow.engine.runtime.programs`), so the kernels keep to
what is per row or per rating. The global draws (each side's Normal–Wishart
row prior, the noise precision) are ``D x D`` work done in NumPy on the host
(:mod:`factorflow.engine.gibbs.priors`) from the statistics :func:`half_step`
returns, and the standard normals a half-step turns into row draws come from
the fit's seeded NumPy generator too: XLA would expand its random-bit
generators into a large share of the program.

The data comes laid out by :mod:`factorflow.engine.gibbs.layout` (each side's ratings
grouped by row in fixed-size chunks, bucketed sizes).

Kernels: :func:`row_normal_equations` (per-row ``H``, ``g`` by autodiff of
the loss), :func:`half_step` (one side's rows given the other side and the
draws) and :func:`score` (running sums and metrics of the averaged model).
:data:`TRACES` counts how often each was traced (compiled).
"""

from __future__ import annotations

import collections
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.gibbs.linalg import cho_solve, cholesky
from factorflow.engine.runtime import programs

#: Times each compiled kernel was traced (a Python side effect: runs only when tracing).
TRACES: collections.Counter = collections.Counter()

# Small products as multiply-and-sum, not ``dot``: XLA:CPU runs a dot through a
# GEMM library whose kernels are generated on a process's first call, which
# costs more than these per-row D x D products (D = rank + 1) in a whole fit.


def _mv(m: jax.Array, v: jax.Array) -> jax.Array:
    """``m @ v`` for ``m [..., A, B]`` and ``v [..., B]``: ``[..., A]``."""
    return jnp.sum(m * v[..., None, :], -1)


def compiler_options() -> dict[str, str]:
    """XLA options the Gibbs programs are compiled with on the default backend.

    On CPU, no YNNPACK fusions: XLA:CPU would hand a few of the half-step's
    reductions and elementwise ops to YNNPACK, which builds a runtime for each
    on a program's first run and ran them slower than XLA's own loops here.
    Other backends take their defaults.
    """
    return {"xla_cpu_experimental_ynn_fusion_type": ""} if jax.default_backend() == "cpu" else {}


def loss_derivatives(loss, pred: jax.Array, target: jax.Array):
    """Per-element ``ℓ'`` and ``ℓ''`` of a per-element loss in ``pred``."""
    grad = jax.grad(lambda p: jnp.sum(loss(p, target)))
    return jax.jvp(grad, (pred,), (jnp.ones_like(pred),))  # diagonal Hessian: H @ 1


@partial(jax.jit, static_argnames=("loss",))
def curvature(pred: jax.Array, target: jax.Array, *, loss) -> jax.Array:
    """Per-element ``ℓ''`` (compiled once per loss)."""
    return loss_derivatives(loss, pred, target)[1]


#: Chunk slots added per step of :func:`row_normal_equations`'s loop (unrolled
#: inside it): 4 runs about as fast as 8 or all 32 slots unrolled in a far
#: smaller program, which a new process pays for when it loads the program.
SLOT_UNROLL = 4


def row_normal_equations(other, x0, mean, row, col, val, weight, *, n_rows, rank, loss):
    """Per-row ``H [R, D, D]`` and ``g [R, D]`` of ``½ Σ_j loss(pred_j, r_j)`` at ``x0``.

    ``pred_j = mean + x·[y_j[:rank], 1] + y_j[rank]`` with ``y_j = other[col]``:
    ``H = ½ Σ ℓ''_j J_j J_jᵀ``, ``g = ½ Σ ℓ'_j J_j``, ``J_j = d pred_j / dx`` (the
    Gauss–Newton form, exact here since ``pred`` is linear in ``x``). For squared
    error: ``Σ f_j f_jᵀ`` and ``Σ (pred_j - r_j) f_j``, ``f_j = [y_j[:rank], 1]``.

    ``J_j`` depends on the other side's row alone, so ``[J Jᵀ, J]`` (``J Jᵀ`` by
    its upper triangle: 77 numbers instead of 132 at rank 10) is taken once per
    row of ``other`` and gathered per rating, a few chunk slots per step of
    a loop over the slots (:data:`SLOT_UNROLL`), each row scaled by ``ℓ''`` in
    its ``J Jᵀ`` part and by ``ℓ'`` in its ``J`` part: XLA:CPU fuses each step
    into one pass over the chunks, where a ``[NC, C, D, D]`` product reduced
    over ``C`` runs several times slower. The barrier keeps ``pred`` from being
    recomputed inside that pass.
    """
    feats = jnp.concatenate([other[:, :rank], jnp.ones_like(other[:, :1])], -1)   # [O, D]
    offset = mean + other[:, rank]                                                 # [O]

    def pred_fn(x, f, off):
        return jnp.sum(x * f) + off

    jac = jax.vmap(jax.grad(pred_fn), (None, 0, 0))(x0[0], feats, offset)           # [O, D]
    d = jac.shape[1]
    upper_a, upper_b = np.triu_indices(d)   # J Jᵀ is symmetric: its D(D+1)/2 upper entries
    n_pairs = upper_a.shape[0]
    table = jnp.concatenate([jac[:, upper_a] * jac[:, upper_b], jac], 1)           # [O, pairs+D]
    pred = jnp.sum(x0[row][:, None, :] * feats[col], -1) + offset[col]              # [NC, C]
    d1, d2 = loss_derivatives(loss, jax.lax.optimization_barrier(pred).reshape(-1),
                              val.reshape(-1))
    live = weight > 0
    d1 = jnp.where(live, 0.5 * d1.reshape(pred.shape), 0.0)
    d2 = jnp.where(live, 0.5 * jnp.maximum(d2.reshape(pred.shape), 0.0), 0.0)
    n_chunks, chunk = col.shape
    step = max(u for u in range(1, SLOT_UNROLL + 1) if chunk % u == 0)
    col_s, d1_s, d2_s = (a.reshape(n_chunks, chunk // step, step) for a in (col, d1, d2))
    curvature_part = (jnp.arange(n_pairs + d) < n_pairs)[None]                      # [1, pairs+D]

    def add_slots(j, acc):
        c, a1, a2 = (jax.lax.dynamic_index_in_dim(a, j, 1, keepdims=False)
                     for a in (col_s, d1_s, d2_s))
        return acc + sum(table[c[:, s]] * jnp.where(curvature_part, a2[:, s, None],
                                                     a1[:, s, None]) for s in range(step))

    sums = jax.lax.fori_loop(0, chunk // step, add_slots,
                             jnp.zeros((n_chunks, n_pairs + d), jac.dtype))        # per chunk
    sums = jax.ops.segment_sum(sums, row, n_rows, indices_are_sorted=True)
    pair = np.zeros((d, d), np.int32)
    pair[upper_a, upper_b] = pair[upper_b, upper_a] = np.arange(n_pairs)
    return sums[:, pair.reshape(-1)].reshape(n_rows, d, d), sums[:, n_pairs:]


def _predict(x, other, self_idx, other_idx, mean, rank):
    return (mean + jnp.sum(x[self_idx, :rank] * other[other_idx, :rank], -1)
            + x[self_idx, rank] + other[other_idx, rank])


@partial(jax.jit, static_argnames=("rank", "loss"))
def half_step(x, other, alpha, lam, lam_m, z, layout, obs, mean, *, rank, loss):
    """Resample one side's rows given the other side, the row prior and alpha.

    Each row's conditional is Gaussian with precision ``P = Lam + alpha H`` and
    linear term ``Lam m + alpha (H x0 - g)`` (:func:`row_normal_equations` at the
    current rows ``x0 = x``); one Cholesky factor gives both its mean and a draw.

    Args:
        x: ``[R, D]`` this side's current rows.
        other: ``[O, D]`` the other side's rows.
        alpha: noise precision.
        lam, lam_m: ``[D, D]`` row-prior precision ``Lam`` and ``[D]`` ``Lam m``.
        z: ``[R, D]`` standard normals, the randomness of the draw.
        layout: this side's :func:`factorflow.engine.gibbs.layout.chunk_layout`.
        obs: ``(self index, other index, rating, weight)`` of every rating
            (:func:`factorflow.engine.gibbs.layout.pad_obs`), for the deviance of the new rows.
        mean: the global offset.

    Returns:
        ``(new rows [R, D], their conditional means [R, D], stats [D + D² + 1])``:
        ``stats`` is ``Σ x, Σ x xᵀ`` of the new rows with data (the next
        Normal–Wishart draw's input, :func:`factorflow.engine.gibbs.priors.row_statistics`)
        and ``Σ loss(pred, r)`` over the ratings (the next noise draw's); nan or
        inf in the new rows shows in it.
    """
    TRACES["half_step"] += 1
    row, col, val, weight, has = layout
    self_idx, other_idx, target, obs_weight = obs
    n_rows = x.shape[0]
    h, g = row_normal_equations(other, x, mean, row, col, val, weight,
                                n_rows=n_rows, rank=rank, loss=loss)
    lin = (lam_m[None] + alpha * (_mv(h, x) - g)).T                               # [D, R]
    chol = cholesky(jnp.transpose(lam[None] + alpha * h, (1, 2, 0)))             # [D, D, R]
    # P^-1 (b + L z) ~ N(P^-1 b, P^-1) with L Lᵀ = P; solve for sample and mean at once.
    sol = cho_solve(chol, jnp.stack([lin + jnp.sum(chol * z.T[None], 1), lin], 1))
    new, cond = sol[:, 0].T, sol[:, 1].T
    pred = _predict(new, other, self_idx, other_idx, mean, rank)
    deviance = jnp.sum(jnp.where(obs_weight > 0, loss(pred, target), 0.0))
    rows = new * has[:, None]
    stats = jnp.concatenate([rows.sum(0), jnp.sum(rows[:, :, None] * rows[:, None, :], 0)
                             .reshape(-1), deviance[None]])
    return new, cond, stats


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


def load_kernels(pool, shapes, n_obs: int, n_valid: int, *, rank: int, loss):
    """A future of ``[user half-step, item half-step]``, and how to load ``score``.

    From :mod:`factorflow.engine.runtime.programs` (stored whole on disk), by the shapes alone:
    the caller lays its data out while they load.

    Args:
        pool: an executor whose thread loads the half-steps (the largest program).
        shapes: ``((R, NC, C) of users, of items)``
            (:func:`factorflow.engine.gibbs.layout.padded_shapes`).
        n_obs, n_valid: padded train and validation rating counts.
        rank, loss: the static settings.

    Returns:
        ``(future of [users' half_step, items' half_step], score loader)``: the
        loader, called on the caller's thread, returns the score program.
    """
    f32, i32 = np.float32, np.int32

    def spec(shape, dtype=f32):
        return jax.ShapeDtypeStruct(shape, dtype)

    d = rank + 1
    rows = [spec((n, d)) for n, _, _ in shapes]
    layouts = [(spec((nc,), i32), spec((nc, c), i32), spec((nc, c)), spec((nc, c)), spec((n,)))
               for n, nc, c in shapes]
    obs = (spec((n_obs,), i32), spec((n_obs,), i32), spec((n_obs,)), spec((n_obs,)))
    valid = (spec((n_valid,), i32), spec((n_valid,), i32), spec((n_valid,)), spec((n_valid,)))
    scalar, sums = spec(()), (spec((n_obs,)), spec((n_valid,)), spec(()))

    def steps():  # one program for both sides when their padded sizes are equal
        return [programs.load(half_step, (rows[s], rows[1 - s], scalar, spec((d, d)),
                                          spec((d,)), rows[s], layouts[s], obs, scalar),
                              name="sampling.half_step", static=dict(rank=rank, loss=loss),
                              options=compiler_options())
                for s in (0, 1)]

    def load_score():
        return programs.load(score, (rows[0], rows[1], sums, scalar,
                                     (layouts[0][4], layouts[1][4]), obs, valid, scalar,
                                     spec((2,))),
                             name="sampling.score", static=dict(loss=loss),
                             options=compiler_options())

    return pool.submit(steps), load_score
