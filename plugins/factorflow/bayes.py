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
refused. Kept models use the users' samples and the items' conditional means
(Rao-Blackwellised).

Published model: the average over the kept samples ``s = 1..S`` of
``mean + b_u^s + c_i^s + <p_u^s, q_i^s>`` is exactly one :class:`FactorParams`
of rank ``S * rank``: ``user_factors = concat_s(p^s) / sqrt(S)``,
``item_factors = concat_s(q^s) / sqrt(S)``, biases averaged (see
:func:`average_samples`). Per-sample clipping cannot be represented; with
``GibbsConfig.clip`` the *reported* metrics clip the averaged prediction to the
training rating range. Users/items in ``[0, n)`` without training ratings get
zero factors and biases (they predict ``mean +`` the other side's bias).

Defaults are the research recipe's, scale-free (ratings rescaled by ``c``
rescale every quantity consistently): with ``v = var(train ratings)`` and
``D = rank + 1``: latent scale ``s0 = latent_scale * (v / rank) ** 0.25``
(initial rows ``N(0, s0²)``, biases 0), Normal–Wishart ``mu0 = 0``,
``beta0 = prior_strength``, ``nu0 = D + prior_dof``, ``W0 = I / (nu0 s0²)``
(prior row std ~ ``s0``), noise ``Gamma(a0 = noise_shape, b0 = noise_rate * v)``
(rate form), alpha starting at ``1 / v``.

Compilation: one ``jax.jit`` half-step serves both sides; padded sizes come
from :func:`bucket` (at most 1/8 padding), so fits of similar size reuse the
compiled programs; users and items are padded to one common shape (one compile)
unless that would cost more than ``sampling.SHARE_MAX_OVERHEAD`` extra work per
sweep (e.g. 610 users vs 9724 items), when each side gets its own shape and
chunk size. A sweep is two or three compiled calls, reported one by one.
The programs come from :mod:`factorflow.programs` (kept whole on disk: a new
process loads them without tracing) and the set-up uses NumPy and
``device_put`` only, so a fit compiles nothing once its shapes were seen.
Random numbers: an ``"rbg"`` key (set per key, not globally), Box–Muller
normals and Wilson–Hilferty chi-squares (:mod:`factorflow.sampling`).
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import numpy as np

from factorflow import programs, sampling
from factorflow.losses import DataLoss, huber, resolve_loss, squared_error
from factorflow.matrix import Triplets
from factorflow.sampling import TRACES, bucket, row_normal_equations  # noqa: F401 (API)
from factorflow.training import FactorParams, FitResult, TrainingDivergedError

__all__ = ["GibbsConfig", "TRACES", "average_samples", "bucket", "fit_gibbs", "kept_sweeps",
           "row_normal_equations"]


class GibbsConfig(NamedTuple):
    """Settings of :func:`fit_gibbs` (all JSON-safe).

    Attributes:
        rank: latent factors per sample; the published model has
            ``S * rank`` columns for ``S`` kept samples.
        sweeps: Gibbs sweeps (users then items), > ``burn_in``.
        burn_in: leading sweeps whose samples are never kept.
        seed: seed of the chain (initial rows and the ``"rbg"`` key).
        chunk: ratings per padded chunk in the per-row layout.
        max_samples: post-burn-in samples kept for the published model, evenly
            thinned (see :func:`kept_sweeps`).
        clip: clip the averaged prediction to the training rating range in the
            reported train/valid metrics (the published parameters cannot clip).
        latent_scale: ``s0 = latent_scale * (var_r / rank) ** 0.25``.
        prior_strength: ``beta0``, prior pseudo-rows of the row mean.
        prior_dof: ``nu0 = rank + 1 + prior_dof``, > -1.
        noise_shape: ``a0`` of the noise-precision Gamma prior.
        noise_rate: ``b0 = noise_rate * var_r`` (Gamma rate).
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


def kept_sweeps(sweeps: int, burn_in: int, max_samples: int) -> np.ndarray:
    """1-based sweeps whose samples are kept: the last of ``S`` equal blocks.

    The ``n = sweeps - burn_in`` post-burn-in sweeps are cut into
    ``S = min(max_samples, n)`` equal blocks; each block's last sweep is kept,
    so the final sweep always is and ``S = n`` keeps them all.
    """
    n = sweeps - burn_in
    s = min(max_samples, n)
    return burn_in + (np.arange(1, s + 1) * n) // s


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
    if not np.any(np.asarray(sampling.curvature(pred, target, loss=loss)) > 0):
        raise ValueError("the Gibbs sampler needs a loss with positive curvature in pred "
                         "(its 2nd derivative is the data precision), e.g. squared or huber")


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
            :func:`factorflow.losses.resolve_loss` name); default squared error.
        log: called after every sweep with a progress line.
        on_epoch: called after every sweep with ``(sweep, params)``, the
            averaged model so far (NumPy float32; the current sample alone
            before the first kept one).

    Returns:
        :class:`FitResult`: ``params`` the final averaged model (factors
        ``[n, S * rank]``), ``best_epoch = sweeps``, and per sweep ``history``:
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
    (ru, ncu, chu), (ri, nci, chi) = sampling.padded_shapes(cu, ci, config.chunk, d)
    lay_u = jax.device_put(sampling.chunk_layout(u, i, r, ru, ncu, chu, mean))
    lay_i = jax.device_put(sampling.chunk_layout(i, u, r, ri, nci, chi, mean))
    pu, pi, pr, pw = jax.device_put(sampling.pad_obs(u, i, r, bucket(len(r)), mean))
    obs_u, obs_i = (pu, pi, pr, pw), (pi, pu, pr, pw)
    v = valid or Triplets(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32))
    obs_v = jax.device_put(sampling.pad_obs(*v, bucket(max(len(v), 1)), mean))
    s0 = config.latent_scale * (var / k) ** 0.25
    nu0 = d + config.prior_dof
    prior = tuple(np.float32(x) for x in (mean, config.prior_strength, nu0)) + (
        np.eye(d, dtype=np.float32) * np.float32(nu0 * s0 * s0),
        np.float32(config.noise_shape), np.float32(config.noise_rate * var))
    rng = np.random.default_rng(config.seed)
    # NumPy values and device_put only: an eager JAX operation would compile.
    xu, xi = (jax.device_put(np.concatenate([rng.normal(0, s0, (n, k)), np.zeros((n, 1))], 1)
                             .astype(np.float32)) for n in (ru, ri))
    alpha, seed = np.float32(1.0 / var), np.int32(config.seed)
    has = (lay_u[4], lay_i[4])
    sums = (np.zeros(pr.shape, np.float32), np.zeros(obs_v[2].shape, np.float32), np.float32(0))
    static = dict(rank=k, loss=loss)
    step_u = programs.load(sampling.half_step, (xu, xi, alpha, seed, np.int32(0), lay_u, obs_u,
                                                prior), name="sampling.half_step", static=static)
    step_i = programs.load(sampling.half_step, (xi, xu, alpha, seed, np.int32(0), lay_i, obs_i,
                                                prior), name="sampling.half_step", static=static)
    score = programs.load(sampling.score, (xu, xi, sums, np.float32(0), has, obs_u, obs_v,
                                           np.float32(mean), bounds),
                          name="sampling.score", static=dict(loss=loss))
    keep_at = set(kept_sweeps(sweeps, config.burn_in, config.max_samples).tolist())
    kept: list[tuple[jax.Array, jax.Array]] = []
    history: list[dict] = []
    mask_u, mask_i = (np.asarray(h)[:n] for h, n in zip(has, (n_users, n_items)))

    def averaged(current):
        samples = kept or [current]
        return average_samples(mean, np.stack([np.asarray(a)[:n_users] for a, _ in samples]),
                               np.stack([np.asarray(b)[:n_items] for _, b in samples]),
                               mask_u, mask_i)

    stats, paused = (math.nan,) * 3, 0.0
    for t in range(1, sweeps + 1):
        t0 = time.perf_counter()
        xu, _, alpha, ok_u = step_u(xu, xi, alpha, seed, np.int32(2 * t), lay_u, obs_u, prior)
        xi, item_mean, alpha, ok_i = step_i(xi, xu, alpha, seed, np.int32(2 * t + 1), lay_i,
                                            obs_i, prior)
        keep = t in keep_at
        if keep or not kept:  # else the averaged model, hence its metrics, did not change
            sums, stats = score(xu, item_mean, sums, np.float32(keep), has, obs_u, obs_v,
                                np.float32(mean), bounds)
        mse, train_loss, valid_mse = (float(x) for x in np.asarray(stats))
        ok, noise = bool(ok_u) and bool(ok_i), float(alpha) ** -0.5
        seconds = time.perf_counter() - t0
        if not (ok and math.isfinite(train_loss)):
            raise TrainingDivergedError(
                f"Gibbs sampling diverged at sweep {t}/{sweeps}: non-finite rows or noise "
                f"precision (train loss {train_loss}); check the ratings and the loss")
        if keep:
            kept.append((xu, item_mean))
        valid_rmse = None if valid is None else math.sqrt(valid_mse)
        rate = len(r) / max(seconds, 1e-9)
        history.append(dict(epoch=t, seconds=time.perf_counter() - start - paused,
                            train_loss=train_loss,
                            train_rmse=math.sqrt(mse), valid_rmse=valid_rmse, ratings_per_s=rate,
                            samples=len(kept), noise_std=noise))
        if on_epoch is not None:  # the caller's evaluation: not the fit's time
            t1 = time.perf_counter()
            on_epoch(t, averaged((xu, item_mean)))
            paused += time.perf_counter() - t1
        if log is not None:
            shown = "n/a" if valid_rmse is None else f"{valid_rmse:.4f}"
            log(f"sweep {t}/{sweeps}: train RMSE {math.sqrt(mse):.4f}, valid RMSE {shown} "
                f"(averaged model, {len(kept)} samples), {rate:,.0f} ratings/s")
    return FitResult(averaged(None), history, sweeps, time.perf_counter() - start)
