"""Bayesian biased matrix factorization (BPMF) sampled by Gibbs sweeps: settings and the fit loop.

Model: ``r_ui = mean + b_u + c_i + <p_u, q_i> + noise``. Each user row
``x_u = [p_u, b_u]`` is ``N(m_U, Lam_U^-1)``, each item row ``y_i = [q_i, c_i]``
``N(m_I, Lam_I^-1)``, with Normal–Wishart hyperpriors on both ``(m, Lam)``; the
data term is ``exp(-alpha/2 * loss(pred, r))`` with noise precision
``alpha ~ Gamma``. Every hyperparameter is sampled: no regularization constant
to tune. ``mean`` is the training mean (fixed).

A row's conditional is Gaussian with precision ``Lam + alpha H`` and linear
term ``Lam m + alpha (H x0 - g)``, ``H = ½ Σ_j ℓ''(pred_j) J_j J_jᵀ`` and
``g = ½ Σ_j ℓ'(pred_j) J_j`` over the row's ratings at its current value
``x0`` (:func:`factorflow.engine.gibbs.kernels.row_normal_equations`). For the
default squared error these are exactly the ALS normal equations and the
conditional is exact. For any other loss it is a Laplace-style approximation
(one Newton step from the current value; negative curvature is clamped to 0),
and alpha's update ``Gamma(a0 + n/2, b0 + ½ Σ loss)`` treats ``loss`` as a
squared-error-like deviance; a loss with no curvature (absolute error) is
refused. The chain and its sweeps are in :mod:`factorflow.engine.gibbs.chain`;
it starts at the damped-mean baseline
(:func:`factorflow.engine.metrics.fit_baseline`: its biases, factors at small
noise, alpha at one over its residual variance).

Kept models average both sides' *conditional means* (Rao-Blackwellised), every
post-burn-in sweep kept until ``max_samples`` are, then every 2nd, 4th, ...
(:mod:`factorflow.engine.gibbs.averaging`), so the averaged model improves from
the first post-burn-in sweep on. The published model is the average over the
kept samples as one :class:`~factorflow.engine.factors.FactorParams` of rank
``S * rank``, its factor part cut to the best rank-``k`` approximation keeping
``GibbsConfig.keep_energy`` of its energy (the samples share most of their
structure, so ``k`` is a small multiple of ``rank``). Only the returned model
is cut; the history's metrics and the earlier ``on_epoch`` calls see the exact
average of the samples so far. Per-sample clipping cannot be represented; with
``GibbsConfig.clip`` the *reported* metrics clip the averaged prediction to the
training rating range. Users/items in ``[0, n)`` without training ratings get
zero factors and biases (they predict ``mean +`` the other side's bias).

Defaults are scale-free (ratings rescaled by ``c`` rescale every quantity
consistently): with ``v = var(train ratings)`` and ``D = rank + 1``: latent
scale ``s0 = latent_scale * (v / rank) ** 0.25`` (initial factors
``N(0, s0²)``), Normal–Wishart ``mu0 = 0``, ``beta0 = prior_strength``,
``nu0 = D + prior_dof``, ``W0 = I / (nu0 s0²)`` (prior row std ~ ``s0``), noise
``Gamma(a0 = noise_shape, b0 = noise_rate * v)`` (rate form).

Compilation: padded sizes come from :func:`factorflow.engine.gibbs.layout.bucket`,
so fits of similar size reuse the compiled programs, which
:mod:`factorflow.engine.runtime.programs` keeps whole on disk; the set-up uses
NumPy and ``device_put`` only, so a fit compiles nothing once its shapes were
seen. A sweep is three compiled calls (two half-steps, the score).
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import numpy as np

from factorflow.engine.factors import FactorParams
from factorflow.engine.gibbs import kernels
from factorflow.engine.gibbs.averaging import KEEP_ENERGY
from factorflow.engine.gibbs.chain import Chain
from factorflow.engine.losses import DataLoss, huber, resolve_loss, squared_error
from factorflow.engine.results import FitResult, TrainingDivergedError
from factorflow.engine.triplets import Triplets, check_fit_inputs
from factorflow.engine.warm import WarmStart


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
        patience: with a validation set, stop once the averaged model's
            validation RMSE has not improved for this many post-burn-in
            sweeps (the average plateaus rather than rising, so the model at
            the stop is returned); None runs every sweep.
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
    patience: int | None = None


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
    if c.patience is not None and c.patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {c.patience}")
    if not c.prior_dof > -1:
        raise ValueError(f"prior_dof must be > -1 (Wishart nu0 > rank), got {c.prior_dof}")


#: Built-in losses known to have positive curvature (no compiled check needed).
_CURVED = (squared_error, huber)


def _check_curvature(loss: DataLoss) -> None:
    pred, target = np.array([3.2, 1.0, 4.5, 2.0, 3.0], np.float32), np.full(5, 3.0, np.float32)
    if not np.any(np.asarray(kernels.curvature(pred, target, loss=loss)) > 0):
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
    init: WarmStart | None = None,
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
        init: a warm start: the chain starts at its known rows (``config``
            holds its shorter sweeps and burn-in, see ``dispatch.gibbs_config``).

    Returns:
        :class:`FitResult`: ``params`` the final averaged model (factors
        ``[n, k]``, ``k <= S * rank``: see ``config.keep_energy``),
        ``best_epoch`` the last sweep run (``sweeps`` unless ``patience``
        stopped it), and per sweep ``history``: ``epoch``, ``seconds`` (since
        the call, compiling included, time in ``on_epoch`` excluded),
        ``train_loss`` (mean ``loss`` of the averaged model on train, i.e.
        train RMSE² for squared error), ``train_rmse``,
        ``valid_rmse`` (None without ``valid``), ``ratings_per_s`` (sweep 1's
        includes compiling), ``samples`` (kept so far) and ``noise_std``
        (``alpha ** -0.5``); metrics clip when ``config.clip``.

    Raises:
        ValueError: bad settings or inputs (empty train, index out of range).
        TrainingDivergedError: the chain produced nan/inf, naming the sweep.
    """
    start = time.perf_counter()
    _check_config(config)
    train, valid = _inputs(train, valid, n_users=n_users, n_items=n_items)
    loss = resolve_loss(loss)
    if loss not in _CURVED:
        _check_curvature(loss)
    chain = Chain(train, valid, n_users=n_users, n_items=n_items, config=config, loss=loss,
                  init=init)
    history: list[dict] = []
    stats, paused, published = (math.nan,) * 3, 0.0, None
    for t in range(1, config.sweeps + 1):
        t0 = time.perf_counter()
        current = chain.sweep(t)
        changed = chain.kept.update(t - config.burn_in, current)
        stats = stats if changed is None else changed  # None: the averaged model is unchanged
        history.append(_record(t, stats, chain, seconds=time.perf_counter() - t0,
                               since_start=time.perf_counter() - start - paused,
                               scored=valid is not None))
        last = t == config.sweeps or stalled(history, config.burn_in, config.patience)
        if on_epoch is not None:  # the caller's evaluation: not the fit's time
            t1 = time.perf_counter()
            if last:  # the last sweep's model is the returned one, cut
                published = chain.averaged(current, config.keep_energy)
            on_epoch(t, published if last else chain.averaged(current))
            paused += time.perf_counter() - t1
        if log is not None:
            _log_sweep(log, history[-1], config.sweeps)
        if last:
            break
    if log is not None and t < config.sweeps:
        log(f"early stop after {config.patience} sweeps without a better valid RMSE of the "
            f"averaged model; {t} of {config.sweeps} sweeps run")
    if published is None:
        published = chain.averaged(current, config.keep_energy)
    return FitResult(published, history, t, time.perf_counter() - start,
                     None if init is None else init.source)


def _inputs(train: Triplets, valid: Triplets | None, *, n_users: int, n_items: int):
    """``(train, valid)`` checked, as int32 indices and float32 ratings."""
    return (None if t is None else Triplets(t.users.astype(np.int32), t.items.astype(np.int32),
                                            t.ratings.astype(np.float32))
            for t in check_fit_inputs(train, valid, n_users=n_users, n_items=n_items))


def stalled(history: list[dict], burn_in: int, patience: int | None) -> bool:
    """Whether ``patience`` post-burn-in sweeps of ``history`` passed without a better valid RMSE.

    Burn-in sweeps do not count: their "averaged model" is the current sample
    alone. False without ``patience`` or a validation set.
    """
    scored = [row["valid_rmse"] for row in history[burn_in:]]
    if patience is None or not scored or scored[0] is None:
        return False
    best = int(np.argmin(scored))
    return len(scored) - 1 - best >= patience


def _record(t: int, stats, chain: Chain, *, seconds: float, since_start: float,
            scored: bool) -> dict:
    """Sweep ``t``'s history row from the score's ``[train mse, train loss, valid mse]``.

    Raises:
        TrainingDivergedError: the averaged model's train loss is not finite.
    """
    mse, train_loss, valid_mse = (float(a) for a in np.asarray(stats))
    if not math.isfinite(train_loss):
        raise TrainingDivergedError(
            f"Gibbs sampling diverged at sweep {t}/{chain.config.sweeps}: train loss "
            f"{train_loss}; check the ratings and the loss")
    return dict(epoch=t, seconds=since_start, train_loss=train_loss, train_rmse=math.sqrt(mse),
                valid_rmse=math.sqrt(valid_mse) if scored else None,
                ratings_per_s=chain.n_ratings / max(seconds, 1e-9),
                samples=len(chain.kept.rows), noise_std=chain.alpha ** -0.5)


def _log_sweep(log: Callable[[str], None], row: dict, sweeps: int) -> None:
    """One progress line for the history row ``row``."""
    shown = "n/a" if row["valid_rmse"] is None else f"{row['valid_rmse']:.4f}"
    log(f"sweep {row['epoch']}/{sweeps}: train RMSE {row['train_rmse']:.4f}, valid RMSE "
        f"{shown} (averaged model, {row['samples']} samples), "
        f"{row['ratings_per_s']:,.0f} ratings/s")
