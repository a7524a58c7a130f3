"""The gradient engine's fit loop: epochs of one compiled call each, the best parameters kept.

The model predicts ``r̂(u, i) = mean + b_u + b_i + <p_u, q_i>``
(:mod:`factorflow.engine.factors`). The objective (:mod:`factorflow.engine.gradient.objective`)
is a per-element data loss (:mod:`factorflow.engine.losses`, built in or
user-defined) averaged over observed ratings plus a per-observation penalty,
on COO triplets, slotted ratings or a dense masked matrix; gradients come from
``jax.grad``, updates from optax (:mod:`factorflow.engine.gradient.optimizers`),
restarts from ``jax.vmap`` (:mod:`factorflow.engine.gradient.restarts`). One
compiled call runs one epoch; this module only lays the data out, loops over
epochs, logs, keeps the best parameters and stops early. Callers go through
:func:`factorflow.engine.dispatch.fit`, which checks the settings first.
"""

from __future__ import annotations

import math
import time
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.config import TrainConfig, check_config
from factorflow.engine.factors import FactorParams
from factorflow.engine.losses import DataLoss, get_penalty, resolve_loss, squared_error
from factorflow.engine.results import FitResult, TrainingDivergedError
from factorflow.engine.triplets import Triplets, check_fit_inputs
from factorflow.engine.warm import WarmStart
from factorflow.engine.gradient.layouts import choose_representation, to_device
from factorflow.engine.gradient.objective import objective
from factorflow.engine.gradient.optimizers import (
    MINIBATCH,
    OPTIMIZERS,
    Hyper,
    UpdateSpec,
    updates_per_epoch,
)
from factorflow.engine.gradient.restarts import (
    batched_epoch,
    best_restart,
    init_state,
    restart_keys,
    single_epoch,
    take_restart,
)
from factorflow.engine.gradient.slots import SLOTTED_MIN_RATINGS, to_slots


@partial(jax.jit, static_argnames=("biases", "batched"))
def _train_rmse(params: FactorParams, data, *, biases: bool, batched: bool) -> jax.Array:
    """``[]`` (``[R]`` when ``batched``) RMSE of ``params`` on the training ratings.

    ``train_loss`` is the objective (any data loss, plus the penalty, before the
    last step), not an RMSE: this is the squared error with ``reg = 0``, through
    the layout's own objective (no second copy of the data), of the parameters
    ``valid_rmse`` scores. One forward pass over the ratings.
    """
    def one(p: FactorParams) -> jax.Array:
        return jnp.sqrt(objective(p, data, reg=0.0, loss=squared_error, biases=biases))

    return jax.vmap(one)(params) if batched else one(params)


def _check_gradient(config: TrainConfig) -> None:
    """The checks :func:`factorflow.engine.config.check_config` leaves to a gradient optimizer."""
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"fit_gradient takes a gradient optimizer, one of {list(OPTIMIZERS)}; "
                         f"got {config.optimizer!r}")
    if config.optimizer in MINIBATCH:
        if config.steps_per_epoch != 1:
            raise ValueError(
                "steps_per_epoch must be 1 for sgd: its epoch is one pass over the ratings")
        if config.representation == "dense":
            raise ValueError("sgd needs the sparse representation, got representation='dense'")


class _Run(NamedTuple):
    """A gradient fit set up: the device data, the settings and the initial state."""

    data: object
    valid_data: object
    hyper: Hyper
    spec: UpdateSpec
    keys: jax.Array
    epoch: Callable
    params: FactorParams
    opt_state: object
    ratings_per_epoch: int


def _set_up(train: Triplets, valid: Triplets | None, *, n_users: int, n_items: int,
            config: TrainConfig, loss: DataLoss, key: jax.Array | None,
            init: WarmStart | None = None) -> _Run:
    """Lay the ratings out on the device and initialize every restart's parameters
    (from ``init``'s known rows, when given)."""
    minibatch = config.optimizer in MINIBATCH
    layout = "sparse" if minibatch else choose_representation(
        config.representation, n_ratings=len(train), n_users=n_users, n_items=n_items)
    spec = UpdateSpec(config.optimizer, config.schedule, float(config.lr_decay),
                      config.steps_per_epoch, config.batch_size, loss,
                      get_penalty(config.penalty), bool(config.biases), bool(config.nonneg))
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
    keys, epoch = (key, single_epoch) if R == 1 else (restart_keys(key, R), batched_epoch)
    params, opt_state = init_state(keys, np.float32(mean), hyper, spec=spec, n_users=n_users,
                                   n_items=n_items, rank=config.rank,
                                   scale=float(config.init_scale), batched=R > 1, warm=init)
    ratings_per_epoch = len(train) * (1 if minibatch else config.steps_per_epoch) * R
    return _Run(data, valid_data, hyper, spec, keys, epoch, params, opt_state,
                ratings_per_epoch)


def fit_gradient(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    valid: Triplets | None = None,
    config: TrainConfig = TrainConfig(optimizer="adam"),
    loss: str | DataLoss | None = None,
    log: Callable[[str], None] | None = None,
    patience: int | None = None,
    key: jax.Array | None = None,
    on_epoch: Callable[[int, FactorParams], None] | None = None,
    init: WarmStart | None = None,
) -> FitResult:
    """Train a biased factor model on COO ratings with a gradient optimizer.

    The arguments are :func:`factorflow.engine.dispatch.fit`'s, ``config.optimizer``
    a gradient optimizer; ``key`` seeds the initial factors, sgd shuffles and
    restarts (restart ``r`` of ``R > 1`` uses ``jax.random.split(key, R)[r]``),
    and ``on_epoch`` sees each epoch's parameters of its best restart. With
    ``init`` every restart starts at its known rows (and mean); the other rows
    and the optimizer's state start as in a cold start.

    Returns:
        A :class:`factorflow.engine.results.FitResult`; its ``history`` rows
        also hold ``restart`` (the epoch's best restart, whose metrics these
        are) and ``restarts``; ``train_loss`` is the objective (data loss plus
        ``reg`` times the penalty) at the start of the epoch's last step (sgd:
        the mean over the epoch's minibatches).

    Raises:
        ValueError: for empty or out-of-range inputs or bad settings
            (:class:`factorflow.engine.losses.InvalidLossError` for a bad loss).
        TrainingDivergedError: when the loss or the parameters become nan/inf.
    """
    train, valid = check_fit_inputs(train, valid, n_users=n_users, n_items=n_items)
    patience = config.patience if patience is None else patience
    check_config(config, patience)
    _check_gradient(config)
    loss_fn = resolve_loss(config.loss if loss is None else loss)
    start = time.perf_counter()
    run = _set_up(train, valid, n_users=n_users, n_items=n_items, config=config, loss=loss_fn,
                  key=key, init=init)
    params, opt_state, R = run.params, run.opt_state, config.restarts
    history: list[dict] = []
    best_params, best_restart_, best_epoch, best_rmse = params, 0, 0, math.inf
    for epoch in range(1, config.epochs + 1):
        params, opt_state, row, step_seconds = _run_epoch(
            run.epoch, params, opt_state, run.keys, epoch, run.data, run.valid_data, run.hyper,
            spec=run.spec, config=config)
        r, valid_rmse = row["restart"], row["valid_rmse"]
        rate = run.ratings_per_epoch / max(step_seconds, 1e-9)
        history.append(dict(epoch=epoch, seconds=time.perf_counter() - start, **row,
                            ratings_per_s=rate, restarts=R))
        if on_epoch is not None:
            on_epoch(epoch, params if R == 1 else take_restart(params, r))
        if log is not None:
            _log_epoch(log, history[-1], config)
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
    return FitResult(best_params, history, best_epoch, time.perf_counter() - start,
                     None if init is None else init.source)


def _log_epoch(log: Callable[[str], None], row: dict, config: TrainConfig) -> None:
    """One progress line for the history row ``row``."""
    shown = "n/a" if row["valid_rmse"] is None else f"{row['valid_rmse']:.4f}"
    R = config.restarts
    best = "" if R == 1 else f", best of {R} restarts: {row['restart']}"
    log(f"epoch {row['epoch']}/{config.epochs}: train loss {row['train_loss']:.4f}, "
        f"train RMSE {row['train_rmse']:.4f}, valid RMSE {shown}, "
        f"{row['ratings_per_s']:,.0f} ratings/s{best}")


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
