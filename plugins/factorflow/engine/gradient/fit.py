"""Training a biased matrix-factorization model: settings and the fit loop.

The model predicts ``r̂(u, i) = mean + b_u + b_i + <p_u, q_i>``
(:mod:`factorflow.engine.factors`). The objective (:mod:`factorflow.engine.gradient.objective`)
is a per-element data loss (:mod:`factorflow.engine.losses`, built in or
user-defined) averaged over observed ratings plus a per-observation penalty,
on COO triplets or a dense masked matrix; gradients come from ``jax.grad``,
updates from optax (:mod:`factorflow.engine.gradient.optimizers`), restarts from ``jax.vmap``
(:mod:`factorflow.engine.gradient.restarts`). One compiled call runs one epoch; this module
only loops over epochs, logs, keeps the best parameters and stops early.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.choices import TRAIN_DEFAULTS
from factorflow.engine.factors import FactorParams, init_params, predict  # noqa: F401 (API)
from factorflow.engine.losses import DataLoss, get_penalty, resolve_loss, squared_error
from factorflow.engine.triplets import Triplets
from factorflow.engine.gradient.optimizers import (
    MINIBATCH,
    OPTIMIZERS,
    Hyper,
    UpdateSpec,
    make_schedule,
    updates_per_epoch,
)
from factorflow.choices import OPTIMIZER_NAMES, SAMPLER_NAMES
from factorflow.engine.gradient.objective import choose_representation, sparse_objective, to_device
from factorflow.engine.gradient.objective import objective as layout_objective
from factorflow.engine.gradient.restarts import (
    batched_epoch,
    best_restart,
    init_state,
    restart_keys,
    single_epoch,
    take_restart,
)
from factorflow.engine.gradient.slots import SLOTTED_MIN_RATINGS, to_slots

__all__ = ["FactorParams", "FitResult", "OPTIMIZERS", "TrainConfig", "TrainingDivergedError",
           "fit", "init_params", "objective", "predict"]

#: The COO objective, ``objective(params, users, items, ratings, *, reg, loss, ...)``.
objective = sparse_objective


class TrainingDivergedError(ValueError):
    """The training loss or the parameters stopped being finite."""


class TrainConfig(NamedTuple):
    """Training settings (all JSON-safe).

    Attributes:
        rank: number of latent factors.
        epochs: maximum number of epochs.
        learning_rate: step size (the schedule's starting value). Plain
            ``"gd"`` is badly conditioned here (the mean's gradient is O(1), a
            factor row's shrinks with its share of the ratings); Adam's
            per-coordinate scaling removes the mismatch.
        reg: penalty strength, see :func:`factorflow.engine.gradient.objective.sparse_objective`.
        seed: seed of the run's key (initial factors, sgd shuffles, restarts).
        optimizer: one of ``registry.OPTIMIZER_NAMES``: ``"adam"``,
            ``"adagrad"``, ``"gd"``, ``"normalized_gd"`` (each array moves by
            ``lr * g / |g|``) or ``"sgd"`` (shuffled minibatches).
        init_scale: ``scale`` of :func:`factorflow.engine.factors.init_params`.
        steps_per_epoch: full-batch steps per epoch (one compiled call); must
            be 1 for ``"sgd"``, whose epoch is one pass over the ratings.
        loss: data loss: a ``registry.LOSS_NAMES`` name (``"squared"``,
            ``"huber"``, ``"absolute"``) or ``"package.module:function"``, see
            :func:`factorflow.engine.losses.resolve_loss`.
        penalty: ``"l2"`` (ridge) or ``"l1"`` (sparse coding).
        biases: learn the global mean and user/item biases; False predicts
            ``<p_u, q_i>`` only and leaves them at 0.
        nonneg: project both factor matrices onto ``>= 0`` after every update
            (NMF-style factors).
        representation: ``"auto"``, ``"sparse"`` (COO gathers) or ``"dense"``
            (masked matrix), see :func:`factorflow.engine.gradient.objective.choose_representation`.
        batch_size: ratings per minibatch for ``"sgd"``.
        schedule: ``"constant"``, ``"cosine"`` or ``"exponential"``; steps per update.
        lr_decay: with a decaying schedule, the last update's rate as a
            fraction of ``learning_rate``, in (0, 1].
        restarts: random restarts trained side by side (vmapped); the one with
            the best validation RMSE (else training loss) is kept.
        patience: with a validation set, stop after this many epochs without a
            new best validation RMSE; None trains all epochs.
    """

    rank: int = TRAIN_DEFAULTS["rank"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    learning_rate: float = TRAIN_DEFAULTS["learning_rate"]
    reg: float = TRAIN_DEFAULTS["reg"]
    seed: int = 0
    optimizer: str = TRAIN_DEFAULTS.get("optimizer", "adam")
    init_scale: float = 0.1
    steps_per_epoch: int = 1
    loss: str = TRAIN_DEFAULTS.get("loss", "squared")
    penalty: str = "l2"
    biases: bool = True
    nonneg: bool = False
    representation: str = "auto"
    batch_size: int = 1024
    schedule: str = "constant"
    lr_decay: float = 0.01
    restarts: int = 1
    patience: int | None = None


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the best parameters: the best epoch's (lowest validation RMSE)
            with a validation set, else the last epoch's; with restarts, of the
            best restart. No restart axis.
        history: one dict per epoch run: ``epoch`` (1-based), ``seconds``
            (since fit started), ``train_loss`` (objective, i.e. data loss
            plus ``reg`` times the penalty, at the start of the epoch's last
            step; sgd: mean over the epoch's minibatches), ``train_rmse`` and
            ``valid_rmse`` (RMSE of the epoch's final parameters on the
            training and validation ratings; ``valid_rmse`` None without a
            validation set), ``ratings_per_s`` (epoch 1's includes compiling;
            scoring excluded), ``restart`` (the epoch's best restart, whose
            metrics these are) and ``restarts``.
        best_epoch: 1-based epoch whose parameters are in ``params``.
        seconds: total wall time of the fit.
    """

    params: FactorParams
    history: list[dict]
    best_epoch: int
    seconds: float


@partial(jax.jit, static_argnames=("biases", "batched"))
def _train_rmse(params: FactorParams, data, *, biases: bool, batched: bool) -> jax.Array:
    """``[]`` (``[R]`` when ``batched``) RMSE of ``params`` on the training ratings.

    ``train_loss`` is the objective (any data loss, plus the penalty, before the
    last step), not an RMSE: this is the squared error with ``reg = 0``, through
    the layout's own objective (no second copy of the data), of the parameters
    ``valid_rmse`` scores. One forward pass over the ratings.
    """
    def one(p: FactorParams) -> jax.Array:
        return jnp.sqrt(layout_objective(p, data, reg=0.0, loss=squared_error, biases=biases))

    return jax.vmap(one)(params) if batched else one(params)


def _check_inputs(triplets: Triplets, name: str, n_users: int, n_items: int) -> None:
    users, items, ratings = (np.asarray(a) for a in triplets)
    if not (users.ndim == items.ndim == ratings.ndim == 1) or not (
        users.shape == items.shape == ratings.shape
    ):
        raise ValueError(
            f"{name}: users {users.shape}, items {items.shape}, ratings {ratings.shape} "
            "must be 1-D of one length"
        )
    if len(triplets) == 0:
        return
    if users.min() < 0 or users.max() >= n_users:
        raise ValueError(
            f"{name}: user index range [{users.min()}, {users.max()}] outside [0, {n_users})"
        )
    if items.min() < 0 or items.max() >= n_items:
        raise ValueError(
            f"{name}: item index range [{items.min()}, {items.max()}] outside [0, {n_items})"
        )
    if not np.all(np.isfinite(ratings)):
        raise ValueError(f"{name}: ratings contain nan or inf")


def _check_config(config: TrainConfig, patience: int | None) -> None:
    for field in ("rank", "epochs", "steps_per_epoch", "batch_size", "restarts"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
    if config.reg < 0:
        raise ValueError(f"reg must be >= 0, got {config.reg}")
    if not config.learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {config.learning_rate}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    if config.optimizer not in OPTIMIZER_NAMES:
        raise ValueError(f"unknown optimizer {config.optimizer!r}; known: {list(OPTIMIZER_NAMES)}")
    make_schedule(config.schedule, 1.0, total_steps=1, final_fraction=config.lr_decay)
    if config.optimizer in MINIBATCH:
        if config.steps_per_epoch != 1:
            raise ValueError(
                "steps_per_epoch must be 1 for sgd: its epoch is one pass over the ratings")
        if config.representation == "dense":
            raise ValueError("sgd needs the sparse representation, got representation='dense'")


def fit(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    valid: Triplets | None = None,
    config: TrainConfig = TrainConfig(),
    loss: str | DataLoss | None = None,
    log: Callable[[str], None] | None = None,
    patience: int | None = None,
    key: jax.Array | None = None,
    on_epoch: Callable[[int, FactorParams], None] | None = None,
) -> FitResult:
    """Train a biased factor model on COO ratings.

    Args:
        train: training ratings.
        n_users: number of users; every user index must be below it.
        n_items: number of items; every item index must be below it.
        valid: optional held-out ratings, scored (RMSE) after every epoch.
        config: training settings.
        loss: overrides ``config.loss``: a name, import path or
            ``fn(pred [n], target [n]) -> [n]``.
        log: called once per epoch with a human-readable progress line.
        patience: overrides ``config.patience`` when not None.
        key: the run's PRNG key; default ``jax.random.key(config.seed)``.
            Restart ``r`` of ``R > 1`` uses ``jax.random.split(key, R)[r]``.
        on_epoch: called after every epoch with the epoch (1-based) and that
            epoch's parameters (of its best restart), e.g. to score a test set.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for empty or out-of-range inputs or bad settings
            (:class:`factorflow.engine.losses.InvalidLossError` for a bad loss).
        TrainingDivergedError: when the loss or the parameters become nan/inf.
    """
    if len(train) == 0:
        raise ValueError("train has no ratings")
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    patience = config.patience if patience is None else patience
    _check_config(config, patience)
    if config.optimizer in SAMPLER_NAMES:
        return _fit_sampler(train, n_users=n_users, n_items=n_items, valid=valid, config=config,
                            loss=loss, log=log, patience=patience, on_epoch=on_epoch)
    loss_fn = resolve_loss(config.loss if loss is None else loss)
    penalty_fn = get_penalty(config.penalty)
    _check_inputs(train, "train", n_users, n_items)
    if valid is not None:
        _check_inputs(valid, "valid", n_users, n_items)
        if len(valid) == 0:
            valid = None
    minibatch = config.optimizer in MINIBATCH
    layout = "sparse" if minibatch else choose_representation(
        config.representation, n_ratings=len(train), n_users=n_users, n_items=n_items)
    spec = UpdateSpec(config.optimizer, config.schedule, float(config.lr_decay),
                      config.steps_per_epoch, config.batch_size, loss_fn, penalty_fn,
                      bool(config.biases), bool(config.nonneg))

    start = time.perf_counter()
    if layout == "sparse" and not minibatch and len(train) >= SLOTTED_MIN_RATINGS:
        data = to_slots(train, n_users=n_users, n_items=n_items)  # full batch: two passes
    else:
        data = to_device(train, n_users=n_users, n_items=n_items, representation=layout)
    valid_data = None if valid is None else to_device(
        valid, n_users=n_users, n_items=n_items, representation="sparse")
    n_updates = updates_per_epoch(spec, len(train))
    hyper = Hyper(jnp.float32(config.learning_rate), jnp.float32(config.reg),
                  jnp.float32(config.epochs * n_updates))
    mean = float(np.mean(train.ratings, dtype=np.float64)) if config.biases else 0.0
    R = config.restarts
    key = jax.random.key(config.seed) if key is None else key
    keys, run = (key, single_epoch) if R == 1 else (restart_keys(key, R), batched_epoch)
    params, opt_state = init_state(keys, np.float32(mean), hyper, spec=spec, n_users=n_users,
                                   n_items=n_items, rank=config.rank,
                                   scale=float(config.init_scale), batched=R > 1)
    ratings_per_epoch = len(train) * (1 if minibatch else config.steps_per_epoch) * R

    history: list[dict] = []
    best_params, best_restart_, best_epoch, best_rmse = params, 0, 0, math.inf
    for epoch in range(1, config.epochs + 1):
        params, opt_state, row, step_seconds = _run_epoch(
            run, params, opt_state, keys, epoch, data, valid_data, hyper, spec=spec, config=config)
        r, valid_rmse = row["restart"], row["valid_rmse"]
        rate = ratings_per_epoch / max(step_seconds, 1e-9)
        history.append(dict(epoch=epoch, seconds=time.perf_counter() - start, **row,
                            ratings_per_s=rate, restarts=R))
        if on_epoch is not None:
            on_epoch(epoch, params if R == 1 else take_restart(params, r))
        if log is not None:
            shown = "n/a" if valid_rmse is None else f"{valid_rmse:.4f}"
            best = "" if R == 1 else f", best of {R} restarts: {r}"
            log(f"epoch {epoch}/{config.epochs}: train loss {row['train_loss']:.4f}, "
                f"train RMSE {row['train_rmse']:.4f}, valid RMSE {shown}, "
                f"{rate:,.0f} ratings/s{best}")
        if valid_rmse is None or valid_rmse < best_rmse:
            best_params, best_restart_, best_epoch = params, r, epoch
            best_rmse = best_rmse if valid_rmse is None else valid_rmse
        elif patience is not None and epoch - best_epoch >= patience:
            if log is not None:
                log(f"early stop after {patience} epochs without a better valid RMSE; "
                    f"best epoch {best_epoch}")
            break
    if R > 1:
        best_params = take_restart(best_params, best_restart_)
    return FitResult(best_params, history, best_epoch, time.perf_counter() - start)


def _run_epoch(run: Callable, params, opt_state, keys, epoch: int, data, valid_data,
               hyper: Hyper, *, spec: UpdateSpec, config: TrainConfig):
    """Epoch ``epoch`` of every restart (one compiled call), then its scores.

    Returns:
        ``(params, opt_state, row, step_seconds)``: ``row`` holds the history's
        ``train_loss``, ``train_rmse``, ``valid_rmse`` and ``restart`` of the
        epoch's best restart (lowest validation RMSE, else lowest loss);
        ``step_seconds`` times the compiled epoch alone, not the scoring.

    Raises:
        TrainingDivergedError: a restart's loss or parameters are not finite.
    """
    t0 = time.perf_counter()
    params, opt_state, stats = run(params, opt_state, keys, np.int32(epoch), data, valid_data,
                                   hyper, spec=spec)
    losses, finite, rmses = (np.atleast_1d(s) for s in jax.device_get(stats))  # blocks
    step_seconds = time.perf_counter() - t0
    if not finite.all():
        bad = np.flatnonzero(~finite)
        which = "" if config.restarts == 1 else f" (restart(s) {bad.tolist()} of {config.restarts})"
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch}/{config.epochs}{which}: train loss "
            f"{float(losses[bad[0]])}; the learning rate ({config.learning_rate}, "
            f"{config.optimizer}, schedule {config.schedule}) is likely too high or reg "
            f"({config.reg}) too low"
        )
    r = best_restart(losses if valid_data is None else rmses)
    train_rmses = np.atleast_1d(jax.device_get(
        _train_rmse(params, data, biases=spec.biases, batched=config.restarts > 1)))
    row = dict(train_loss=float(losses[r]), train_rmse=float(train_rmses[r]),
               valid_rmse=None if valid_data is None else float(rmses[r]), restart=r)
    return params, opt_state, row, step_seconds


def _fit_sampler(train: Triplets, *, n_users: int, n_items: int, valid: Triplets | None,
                 config: TrainConfig, loss: str | DataLoss | None,
                 log: Callable[[str], None] | None, patience: int | None,
                 on_epoch: Callable[[int, FactorParams], None] | None) -> FitResult:
    """``optimizer="gibbs"``: Bayesian factorization, one epoch = one Gibbs sweep.

    Rank, epochs (sweeps), seed and loss carry over; the priors replace
    ``learning_rate`` and ``reg``, and averaging replaces early stopping.
    """
    from factorflow.engine.gibbs.sampler import GibbsConfig, fit_gibbs

    unsupported = {"restarts": config.restarts != 1, "patience": patience is not None,
                   "nonneg": config.nonneg, "biases=False": not config.biases,
                   "penalty": config.penalty != "l2"}
    named = [name for name, used in unsupported.items() if used]
    if named:
        raise ValueError(f"optimizer 'gibbs' does not take {', '.join(named)}: "
                         "use a gradient optimizer (e.g. 'adam') for those")
    # clip=False: the history then scores exactly the model that is returned
    # (published factors cannot clip a dot product).
    gibbs = GibbsConfig(rank=config.rank, sweeps=config.epochs, seed=config.seed, clip=False,
                        burn_in=min(GibbsConfig().burn_in, config.epochs - 1))
    return fit_gibbs(train, n_users=n_users, n_items=n_items, valid=valid, config=gibbs,
                     loss=resolve_loss(config.loss if loss is None else loss), log=log,
                     on_epoch=on_epoch)
