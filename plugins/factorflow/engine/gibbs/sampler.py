"""Bayesian biased matrix factorization (BPMF) sampled by Gibbs sweeps.

Model: ``r_ui = mean + b_u + c_i + <p_u, q_i> + noise``. Each user row
``x_u = [p_u, b_u]`` is ``N(m_U, Lam_U^-1)``, each item row ``y_i = [q_i, c_i]``
``N(m_I, Lam_I^-1)``, with Normal–Wishart hyperpriors on both ``(m, Lam)``; the
data term is ``exp(-alpha/2 * loss(pred, r))`` with noise precision
``alpha ~ Gamma``. Every hyperparameter is sampled: no regularization constant
to tune. ``mean`` is the training mean (fixed).

One sweep resamples, in order: user hyperparameters, all user rows, alpha,
item hyperparameters, all item rows, alpha. A row's conditional is Gaussian
with precision ``Lam + alpha H`` and linear term ``Lam m + alpha (H x0 - g)``,
``H = ½ Σ_j ℓ''(pred_j) J_j J_jᵀ`` and ``g = ½ Σ_j ℓ'(pred_j) J_j`` over the
row's ratings at its current value ``x0`` (``J_j = d pred_j / dx`` by
``jax.grad`` of the bilinear prediction, ``ℓ'`` and ``ℓ''`` by ``jax.grad`` /
``jax.jvp`` of the per-element ``loss``). For the default squared error these
are exactly the ALS normal equations ``Σ y yᵀ`` and ``Σ (pred - r) y`` and the
conditional is exact. For any other loss it is a Laplace-style approximation
(one Newton step from the current value; negative curvature is clamped to 0),
and alpha's update ``Gamma(a0 + n/2, b0 + ½ Σ loss)`` treats ``loss`` as a
squared-error-like deviance; a loss with no curvature (absolute error) is
refused. The rows are resampled in one compiled program per side
(:func:`kernels.half_step`); the hyperparameters and alpha are drawn in NumPy
on the host from the statistics it returns (:mod:`factorflow.engine.gibbs.priors`).

Kept models average both sides' *conditional means* (Rao-Blackwellised: the
mean of each row's Gaussian conditional, not its draw), and every post-burn-in
sweep is kept until ``max_samples`` are, then every 2nd, 4th, ... (the kept
ones thinned to match, :func:`factorflow.engine.gibbs.averaging.kept_stride`): the averaged
model improves from the first post-burn-in sweep on. The chain starts at the
damped-mean baseline (:func:`factorflow.engine.metrics.fit_baseline`: its biases,
factors at small noise, alpha at one over its residual variance), and its
first sweep conditions each side on the other's conditional means rather than
on a draw (the first user draws, given random item factors, are mostly prior
noise that would otherwise pass into the items); from sweep 2 on every step is
an exact Gibbs step. On
MovieLens 100K (u1-u5) that first sweep takes the mean test RMSE at sweep 2
from 0.936 to 0.929 and leaves the final one within its seed-to-seed spread.

Published model: the average over the kept samples ``s = 1..S`` of
``mean + b_u^s + c_i^s + <p_u^s, q_i^s>`` is exactly one :class:`FactorParams`
of rank ``S * rank``: ``user_factors = concat_s(p^s) / sqrt(S)``,
``item_factors = concat_s(q^s) / sqrt(S)``, biases averaged (see
:func:`factorflow.engine.gibbs.averaging.average_samples`). Its factor part is then cut to
the best rank-``k`` approximation keeping ``GibbsConfig.keep_energy`` of its
energy (:func:`factorflow.engine.gibbs.averaging.best_rank_factors`): the samples share most
of their structure, so ``k`` is a small multiple of ``rank``, not ``S * rank``.
Only the returned model is cut (``on_epoch`` gets it after the last sweep); the
history's metrics and the earlier ``on_epoch`` calls see the exact average of
the samples so far. Per-sample clipping cannot be
represented; with ``GibbsConfig.clip`` the *reported* metrics clip the averaged
prediction to the training rating range. Users/items in ``[0, n)`` without
training ratings get zero factors and biases (they predict ``mean +`` the other
side's bias).

Defaults are the research recipe's, scale-free (ratings rescaled by ``c``
rescale every quantity consistently): with ``v = var(train ratings)`` and
``D = rank + 1``: latent scale ``s0 = latent_scale * (v / rank) ** 0.25``
(initial factors ``N(0, s0²)``), Normal–Wishart ``mu0 = 0``,
``beta0 = prior_strength``, ``nu0 = D + prior_dof``, ``W0 = I / (nu0 s0²)``
(prior row std ~ ``s0``), noise ``Gamma(a0 = noise_shape, b0 = noise_rate * v)``
(rate form).

Compilation: one ``jax.jit`` half-step serves both sides; padded sizes come
from :func:`bucket` (at most 1/8 padding), so fits of similar size reuse the
compiled programs; users and items are padded to one common shape (one compile)
unless that would cost more than ``layout.SHARE_MAX_OVERHEAD`` extra work per
sweep (e.g. 610 users vs 9724 items), when each side gets its own shape and
chunk size. A sweep is three compiled calls (two half-steps, the score),
reported one by one. The programs come from :mod:`factorflow.engine.runtime.programs` (kept
whole on disk: a new process loads them without tracing, the half-step on
another thread while the data is laid out) and the set-up uses NumPy and
``device_put`` only, so a fit compiles nothing once its shapes were seen. Random numbers: the
fit's seeded NumPy generator (standard normals for the rows, exact
chi-square and Gamma variates for the hyperparameters).
"""

from __future__ import annotations

import concurrent.futures
import math
import time
from typing import Callable, NamedTuple

import jax
import numpy as np

from factorflow.engine.gibbs import kernels, layout, priors
from factorflow.engine.gibbs.averaging import (  # noqa: F401 (kept_stride, kept_sweeps: API)
    KEEP_ENERGY,
    KeptSamples,
    average_samples,
    kept_stride,
    kept_sweeps,
)
from factorflow.engine.gibbs.layout import bucket
from factorflow.engine.metrics import fit_baseline, predict_baseline
from factorflow.engine.losses import DataLoss, huber, resolve_loss, squared_error
from factorflow.engine.triplets import Triplets
from factorflow.engine.gibbs.kernels import TRACES, row_normal_equations  # noqa: F401 (API)
from factorflow.engine.gradient.fit import FactorParams, FitResult, TrainingDivergedError

__all__ = ["GibbsConfig", "TRACES", "average_samples", "bucket", "fit_gibbs", "kept_stride",
           "kept_sweeps", "row_normal_equations"]


class GibbsConfig(NamedTuple):
    """Settings of :func:`fit_gibbs` (all JSON-safe).

    Attributes:
        rank: latent factors per sample; the published model has at most
            ``S * rank`` columns for ``S`` kept samples.
        sweeps: Gibbs sweeps (users then items), > ``burn_in``.
        burn_in: leading sweeps whose samples are never kept.
        seed: seed of the chain (initial rows and every draw).
        chunk: ratings per padded chunk in the per-row layout.
        max_samples: at most this many post-burn-in samples are kept for the
            published model, evenly thinned (between half and all of it; see
            :func:`factorflow.engine.gibbs.averaging.kept_sweeps`).
        clip: clip the averaged prediction to the training rating range in the
            reported train/valid metrics (the published parameters cannot clip).
        latent_scale: ``s0 = latent_scale * (var_r / rank) ** 0.25``.
        prior_strength: ``beta0``, prior pseudo-rows of the row mean.
        prior_dof: ``nu0 = rank + 1 + prior_dof``, > -1.
        noise_shape: ``a0`` of the noise-precision Gamma prior.
        noise_rate: ``b0 = noise_rate * var_r`` (Gamma rate).
        keep_energy: share of the averaged factor part's energy the returned
            model keeps, in (0, 1]; None returns all ``S * rank`` columns
            (see :func:`factorflow.engine.gibbs.averaging.best_rank_factors`).
    """

    rank: int = 10
    sweeps: int = 60
    burn_in: int = 2
    seed: int = 0
    chunk: int = 32
    max_samples: int = 16
    clip: bool = True
    latent_scale: float = 0.5
    prior_strength: float = 2.0
    prior_dof: float = 0.0
    noise_shape: float = 1.0
    noise_rate: float = 1.0
    keep_energy: float | None = KEEP_ENERGY


def _check_config(c: GibbsConfig) -> None:
    for field in ("rank", "sweeps", "chunk", "max_samples"):
        if getattr(c, field) < 1:
            raise ValueError(f"{field} must be >= 1, got {getattr(c, field)}")
    if c.burn_in < 0:
        raise ValueError(f"burn_in must be >= 0, got {c.burn_in}")
    if c.sweeps <= c.burn_in:
        raise ValueError(f"sweeps ({c.sweeps}) must exceed burn_in ({c.burn_in}): "
                         "no post-burn-in sample would be kept")
    for field in ("latent_scale", "prior_strength", "noise_shape", "noise_rate"):
        if not getattr(c, field) > 0:
            raise ValueError(f"{field} must be > 0, got {getattr(c, field)}")
    if c.keep_energy is not None and not 0 < c.keep_energy <= 1:
        raise ValueError(f"keep_energy must be in (0, 1] or None, got {c.keep_energy}")
    if not c.prior_dof > -1:
        raise ValueError(f"prior_dof must be > -1 (Wishart nu0 > rank), got {c.prior_dof}")


def _check_triplets(t: Triplets, name: str, n_users: int, n_items: int) -> Triplets:
    u, i, r = (np.asarray(a) for a in t)
    if not (u.ndim == i.ndim == r.ndim == 1 and u.shape == i.shape == r.shape):
        raise ValueError(f"{name}: users {u.shape}, items {i.shape}, ratings {r.shape} "
                         "must be 1-D of one length")
    if u.size:
        for idx, n, what in ((u, n_users, "user"), (i, n_items, "item")):
            if idx.min() < 0 or idx.max() >= n:
                raise ValueError(f"{name}: {what} index range [{idx.min()}, {idx.max()}] "
                                 f"outside [0, {n})")
        if not np.all(np.isfinite(r)):
            raise ValueError(f"{name}: ratings contain nan or inf")
    return Triplets(u.astype(np.int32), i.astype(np.int32), r.astype(np.float32))


#: Built-in losses known to have positive curvature (no compiled check needed).
_CURVED = (squared_error, huber)


def _check_curvature(loss: DataLoss) -> None:
    pred, target = np.array([3.2, 1.0, 4.5, 2.0, 3.0], np.float32), np.full(5, 3.0, np.float32)
    if not np.any(np.asarray(kernels.curvature(pred, target, loss=loss)) > 0):
        raise ValueError("the Gibbs sampler needs a loss with positive curvature in pred "
                         "(its 2nd derivative is the data precision), e.g. squared or huber")


def _device_layouts(train: Triplets, shapes, n_obs: int, mean: float):
    """Both sides' chunk layouts and the padded rating list, on the device.

    Returns ``(layouts, obs, has)``: ``obs`` is the users' ``(user, item,
    rating, weight)`` list and the items' view of the same device arrays with
    the ids swapped; ``has`` the two host ``[R]`` row masks. Each host array is
    dropped as soon as the device holds its copy, so the host never holds more
    than one of these, the fit's largest arrays, at a time.
    """
    u, i, r = train
    lays, has = [], []
    for rows, cols, (n_rows, n_chunks, chunk) in ((u, i, shapes[0]), (i, u, shapes[1])):
        side = layout.chunk_layout(rows, cols, r, n_rows, n_chunks, chunk, mean)
        has.append(side[4])
        lays.append(jax.device_put(side))
        del side
    by_user = jax.device_put(layout.pad_obs(u, i, r, n_obs, mean))
    by_item = (by_user[1], by_user[0], by_user[2], by_user[3])
    return tuple(lays), (by_user, by_item), tuple(has)


def fit_gibbs(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    valid: Triplets | None = None,
    config: GibbsConfig = GibbsConfig(),
    loss: str | DataLoss = squared_error,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, FactorParams], None] | None = None,
) -> FitResult:
    """Sample a Bayesian biased factor model; return the averaged model.

    Args:
        train: training ratings.
        n_users, n_items: index ranges; rows without ratings get zero params.
        valid: optional held-out ratings, scored after every sweep.
        config: settings, see :class:`GibbsConfig`.
        loss: per-element data loss ``fn(pred [n], target [n]) -> [n]`` (or a
            :func:`factorflow.engine.losses.resolve_loss` name); default squared error.
        log: called after every sweep with a progress line.
        on_epoch: called after every sweep with ``(sweep, params)``, the
            averaged model so far (NumPy float32; the current sample alone
            before the first kept one; after the last sweep, the returned model).

    Returns:
        :class:`FitResult`: ``params`` the final averaged model (factors
        ``[n, k]``, ``k <= S * rank``: see ``config.keep_energy``),
        ``best_epoch = sweeps``, and per sweep ``history``:
        ``epoch``, ``seconds`` (since the call, compiling included, time in
        ``on_epoch`` excluded), ``train_loss`` (mean ``loss`` of the averaged
        model on train, i.e. train RMSE² for squared error), ``train_rmse``,
        ``valid_rmse`` (None without ``valid``), ``ratings_per_s`` (sweep 1's
        includes compiling), ``samples`` (kept so far) and ``noise_std``
        (``alpha ** -0.5``); metrics clip when ``config.clip``.

    Raises:
        ValueError: bad settings or inputs (empty train, index out of range).
        TrainingDivergedError: the chain produced nan/inf, naming the sweep.
    """
    start = time.perf_counter()
    _check_config(config)
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    if len(train) == 0:
        raise ValueError("train has no ratings")
    train = _check_triplets(train, "train", n_users, n_items)
    if valid is not None:
        valid = _check_triplets(valid, "valid", n_users, n_items)
        valid = valid if len(valid) else None
    loss = resolve_loss(loss)
    if loss not in _CURVED:
        _check_curvature(loss)
    k, d, sweeps = config.rank, config.rank + 1, config.sweeps
    u, i, r = train
    mean = float(np.mean(r, dtype=np.float64))
    var = max(float(np.var(r, dtype=np.float64)), 1e-6 * max(mean * mean, 1.0))
    bounds = np.array([r.min(), r.max()] if config.clip else [-np.inf, np.inf], np.float32)
    cu, ci = np.bincount(u, minlength=n_users), np.bincount(i, minlength=n_items)
    n_rows = (int(np.count_nonzero(cu)), int(np.count_nonzero(ci)))
    shapes = layout.padded_shapes(cu, ci, config.chunk, d)
    n_obs, n_valid = bucket(len(r)), bucket(max(0 if valid is None else len(valid), 1))
    # The half-step loads (from disk, GIL released) on another thread while the
    # data is laid out here, then this thread loads the score program: on a
    # 2-core CPU that hides the layout and the smaller load.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loading, load_score = kernels.load_kernels(pool, shapes, n_obs, n_valid,
                                                    rank=k, loss=loss)
        ru, ri = shapes[0][0], shapes[1][0]
        lays, obs, has = _device_layouts(train, shapes, n_obs, mean)
        v = valid or Triplets(np.zeros(0, np.int32), np.zeros(0, np.int32),
                              np.zeros(0, np.float32))
        s0 = config.latent_scale * (var / k) ** 0.25
        nu0 = d + config.prior_dof
        w0_inv = np.eye(d) * (nu0 * s0 * s0)
        rng = np.random.default_rng(config.seed)
        # Factors N(0, s0²); biases start at the damped-mean baseline, so the first
        # sweeps refine a model that already has them instead of finding them.
        x = [np.concatenate([rng.normal(0, s0, (n, k)), np.zeros((n, 1))], 1).astype(np.float32)
             for n in (ru, ri)]
        base = fit_baseline(train, n_users=n_users, n_items=n_items, iters=3)
        x[0][:n_users, k], x[1][:n_items, k] = base.user_bias, base.item_bias
        row_stats = [priors.row_statistics(x[s], has[s]) for s in (0, 1)]
        noise_shapes = [a.shape for a in x]
        # NumPy values and device_put only: an eager JAX operation would compile.
        obs_v = jax.device_put(layout.pad_obs(*v, n_valid, mean))
        x = jax.device_put(x)
        score = load_score()
        steps = loading.result()
    # The chain starts at the baseline: its residual variance is the first noise estimate.
    resid = r - predict_baseline(base, u, i)
    alpha = 1.0 / max(float(np.var(resid, dtype=np.float64)), 1e-6 * var)
    mean32 = np.float32(mean)
    history: list[dict] = []
    mask_u, mask_i = (np.asarray(h)[:n] for h, n in zip(has, (n_users, n_items)))
    kept = KeptSamples(lambda rows, keep, sums: score(*rows, sums, np.float32(keep), has,
                                                      obs[0], obs_v, mean32, bounds),
                       (np.zeros(n_obs, np.float32), np.zeros(n_valid, np.float32),
                        np.float32(0)), config.max_samples)

    def averaged(current, keep_energy=None):
        samples = kept.samples() or [current]
        return average_samples(mean, np.stack([np.asarray(a)[:n_users] for a, _ in samples]),
                               np.stack([np.asarray(b)[:n_items] for _, b in samples]),
                               mask_u, mask_i, keep_energy=keep_energy)

    def draws(s):
        """Side ``s``'s row prior ``(Lam, Lam m)`` and normals: they need only its
        rows' statistics, so they are drawn while the other side's step runs."""
        m, lam = priors.normal_wishart_posterior(
            rng, n_rows[s], row_stats[s], beta0=config.prior_strength, nu0=nu0, w0_inv=w0_inv)
        return (lam.astype(np.float32), (lam @ m).astype(np.float32),
                rng.standard_normal(noise_shapes[s], np.float32))

    stats, paused, published = (math.nan,) * 3, 0.0, None
    ahead = draws(0)
    for t in range(1, sweeps + 1):
        t0 = time.perf_counter()
        means = [None, None]
        for s in (0, 1):  # users, then items
            x[s], means[s], out = steps[s](x[s], x[1 - s], np.float32(alpha), *ahead, lays[s],
                                           obs[s], mean32)
            if t == 1:  # a deterministic first sweep: see the module's docstring
                x[s] = means[s]
            ahead = draws(1 - s)  # the next step's, while this one runs
            out = np.asarray(out, np.float64)
            if not np.all(np.isfinite(out)):
                raise TrainingDivergedError(
                    f"Gibbs sampling diverged at sweep {t}/{sweeps}: non-finite "
                    f"{('user', 'item')[s]} rows or loss; check the ratings and the loss")
            row_stats[s] = out[:-1]
            alpha = priors.noise_precision(rng, len(r), out[-1], shape=config.noise_shape,
                                                rate=config.noise_rate * var)
        current = tuple(means)
        changed = kept.update(t - config.burn_in, current)
        stats = stats if changed is None else changed  # None: the averaged model is unchanged
        mse, train_loss, valid_mse = (float(a) for a in np.asarray(stats))
        seconds = time.perf_counter() - t0
        if not math.isfinite(train_loss):
            raise TrainingDivergedError(
                f"Gibbs sampling diverged at sweep {t}/{sweeps}: train loss {train_loss}; "
                "check the ratings and the loss")
        valid_rmse = None if valid is None else math.sqrt(valid_mse)
        rate = len(r) / max(seconds, 1e-9)
        history.append(dict(epoch=t, seconds=time.perf_counter() - start - paused,
                            train_loss=train_loss,
                            train_rmse=math.sqrt(mse), valid_rmse=valid_rmse, ratings_per_s=rate,
                            samples=len(kept.rows), noise_std=alpha ** -0.5))
        if on_epoch is not None:  # the caller's evaluation: not the fit's time
            t1 = time.perf_counter()
            if t == sweeps:  # the last sweep's model is the returned one, cut
                published = averaged(current, config.keep_energy)
            on_epoch(t, published if t == sweeps else averaged(current))
            paused += time.perf_counter() - t1
        if log is not None:
            shown = "n/a" if valid_rmse is None else f"{valid_rmse:.4f}"
            log(f"sweep {t}/{sweeps}: train RMSE {math.sqrt(mse):.4f}, valid RMSE {shown} "
                f"(averaged model, {len(kept.rows)} samples), {rate:,.0f} ratings/s")
    if published is None:
        published = averaged(None, config.keep_energy)
    return FitResult(published, history, sweeps, time.perf_counter() - start)
