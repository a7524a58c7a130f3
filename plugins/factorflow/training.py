"""Full-batch training of a biased matrix-factorization model.

The model predicts ``r̂(u, i) = mean + b_u + b_i + <p_u, q_i>``. Training works
on COO triplets (a gather per rating), so its cost grows with the number of
ratings, not with ``n_users * n_items``. Gradients come from ``jax.grad`` of
:func:`objective`; nothing here is differentiated by hand.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from factorflow.defaults import TRAIN_DEFAULTS
from factorflow.losses import DataLoss, squared_error
from factorflow.matrix import Triplets

OPTIMIZERS = ("adam", "gd", "normalized_gd")


class TrainingDivergedError(ValueError):
    """The training loss or the parameters stopped being finite."""


class FactorParams(NamedTuple):
    """Parameters of the biased factor model.

    Attributes:
        mean: ``[]`` global offset.
        user_bias: ``[n_users]``.
        item_bias: ``[n_items]``.
        user_factors: ``[n_users, rank]``.
        item_factors: ``[n_items, rank]``.
    """

    mean: jax.Array
    user_bias: jax.Array
    item_bias: jax.Array
    user_factors: jax.Array
    item_factors: jax.Array


def init_params(
    key: jax.Array,
    *,
    n_users: int,
    n_items: int,
    rank: int,
    mean: float,
    scale: float = 0.1,
) -> FactorParams:
    """Zero biases and small random factors.

    Factors are ``normal * scale / sqrt(rank)`` so that the initial dot products
    stay around ``scale**2`` whatever the rank: small enough not to swamp the
    biases, non-zero so that the factors' gradients (each proportional to the
    other side's factors) are not stuck at zero.

    Args:
        key: PRNG key.
        n_users: number of users.
        n_items: number of items.
        rank: number of latent factors, >= 1.
        mean: initial global offset, normally the training mean.
        scale: size of the initial factors.

    Returns:
        float32 parameters.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    user_key, item_key = jax.random.split(key)
    std = scale / math.sqrt(rank)
    return FactorParams(
        mean=jnp.asarray(mean, jnp.float32),
        user_bias=jnp.zeros((n_users,), jnp.float32),
        item_bias=jnp.zeros((n_items,), jnp.float32),
        user_factors=std * jax.random.normal(user_key, (n_users, rank), jnp.float32),
        item_factors=std * jax.random.normal(item_key, (n_items, rank), jnp.float32),
    )


def predict(params: FactorParams, users: jax.Array, items: jax.Array) -> jax.Array:
    """Predicted ratings ``[n]`` for ``[n]`` user and item indices."""
    if jnp.shape(users) != jnp.shape(items):
        raise ValueError(f"users {jnp.shape(users)} and items {jnp.shape(items)} differ in shape")
    interaction = jnp.sum(params.user_factors[users] * params.item_factors[items], axis=-1)
    return params.mean + params.user_bias[users] + params.item_bias[items] + interaction


def objective(
    params: FactorParams,
    users: jax.Array,
    items: jax.Array,
    ratings: jax.Array,
    *,
    reg: float,
    loss: DataLoss = squared_error,
) -> jax.Array:
    """Mean data loss plus the per-observation L2 penalty, a scalar.

    The penalty is ``reg * mean_over_ratings(|p_u|² + |q_i|² + b_u² + b_i²)``:
    every rating charges its own user's and item's parameters. That is the
    objective per-rating SGD actually minimizes, and it scales the shrinkage of
    a row with its number of ratings, the same as the data term's pull on it;
    a flat ``reg * |P|²`` would instead over-shrink heavy users relative to
    light ones, and its best ``reg`` would change with the dataset size. The
    global ``mean`` is not penalized: it is a location, not a preference.

    Args:
        params: model parameters.
        users: ``[n]`` int32 user indices.
        items: ``[n]`` int32 item indices.
        ratings: ``[n]`` float32 observed ratings.
        reg: L2 strength.
        loss: per-element data loss ``(pred, target) -> [n]``.

    Returns:
        ``[]`` float32 objective.
    """
    if not (jnp.shape(users) == jnp.shape(items) == jnp.shape(ratings)):
        raise ValueError(
            f"users {jnp.shape(users)}, items {jnp.shape(items)} and ratings "
            f"{jnp.shape(ratings)} must have one shape"
        )
    pu = params.user_factors[users]
    qi = params.item_factors[items]
    bu = params.user_bias[users]
    bi = params.item_bias[items]
    pred = params.mean + bu + bi + jnp.sum(pu * qi, axis=-1)
    penalty = jnp.sum(pu * pu, -1) + jnp.sum(qi * qi, -1) + bu * bu + bi * bi
    return jnp.mean(loss(pred, ratings)) + reg * jnp.mean(penalty)


class TrainConfig(NamedTuple):
    """Training settings.

    Attributes:
        rank: number of latent factors.
        epochs: maximum number of epochs; an epoch is ``steps_per_epoch``
            full-batch steps.
        learning_rate: step size. ``"gd"`` is badly conditioned here: the
            global mean's gradient is O(1) while a factor row's shrinks with
            its share of the ratings, so one rate cannot suit both (rates
            above ~1 diverge, below it the factors barely move); it is kept as
            a reference. Adam's per-coordinate scaling removes the mismatch.
        reg: L2 strength, see :func:`objective`.
        seed: seed of the initial factors.
        optimizer: ``"adam"`` (optax), ``"gd"`` (plain gradient descent) or
            ``"normalized_gd"`` (each parameter array moves by
            ``-learning_rate * g / |g|``).
        init_scale: ``scale`` of :func:`init_params`.
        steps_per_epoch: full-batch steps per epoch (one compiled call).
    """

    rank: int = TRAIN_DEFAULTS["rank"]
    epochs: int = TRAIN_DEFAULTS["epochs"]
    learning_rate: float = TRAIN_DEFAULTS["learning_rate"]
    reg: float = TRAIN_DEFAULTS["reg"]
    seed: int = 0
    optimizer: str = "adam"
    init_scale: float = 0.1
    steps_per_epoch: int = 1


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
        params: the best epoch's parameters (lowest validation RMSE) when a
            validation set was given, else the last epoch's.
        history: one dict per epoch run: ``epoch`` (1-based), ``seconds``
            (since fit started), ``train_loss`` (objective at the start of the
            epoch's last step), ``valid_rmse`` (None without a validation set)
            and ``ratings_per_s`` (training throughput of that epoch; epoch 1's
            includes compiling the step).
        best_epoch: 1-based epoch whose parameters are in ``params``.
        seconds: total wall time of the fit.
    """

    params: FactorParams
    history: list[dict]
    best_epoch: int
    seconds: float


def make_optimizer(name: str, learning_rate: float | jax.Array) -> optax.GradientTransformation:
    """The optax transformation for ``TrainConfig.optimizer`` ``name``.

    ``learning_rate`` may be a traced scalar, so one compiled step serves any rate.
    """
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "gd":
        return optax.sgd(learning_rate)
    if name == "normalized_gd":
        # A unit-norm direction per array: the step size no longer depends on
        # the gradient's magnitude, which otherwise explodes early under plain
        # squared error. The epsilon keeps an all-zero gradient at zero.
        def unit(updates, params=None):
            del params
            return jax.tree.map(lambda g: g / (jnp.linalg.norm(g) + 1e-12), updates)

        return optax.chain(optax.stateless(unit), optax.scale(-learning_rate))
    raise ValueError(f"unknown optimizer {name!r}; known: {list(OPTIMIZERS)}")


def _train_epoch(
    params: FactorParams,
    opt_state: optax.OptState,
    users: jax.Array,
    items: jax.Array,
    ratings: jax.Array,
    learning_rate: jax.Array,
    reg: jax.Array,
    *,
    optimizer: str,
    steps: int,
    loss: DataLoss,
) -> tuple[FactorParams, optax.OptState, jax.Array, jax.Array]:
    """``steps`` full-batch updates; returns the new state, the last step's
    objective (before its update) and whether every parameter is still finite."""
    tx = make_optimizer(optimizer, learning_rate)

    def one_step(carry, _):
        params, opt_state = carry
        value, grads = jax.value_and_grad(objective)(
            params, users, items, ratings, reg=reg, loss=loss
        )
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, opt_state), values = jax.lax.scan(one_step, (params, opt_state), None, length=steps)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    return params, opt_state, values[-1], finite


# Module level, so the compiled step is shared by every fit with the same
# optimizer, loss and data shapes; rate and reg are traced, so sweeps over them
# reuse it too. The data are arguments, not closed-over constants, so XLA does
# not bake the training set into the program.
_train_epoch_jit = jax.jit(_train_epoch, static_argnames=("optimizer", "steps", "loss"))


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


def _device_triplets(t: Triplets) -> tuple[jax.Array, jax.Array, jax.Array]:
    users, items = jnp.asarray(t.users, jnp.int32), jnp.asarray(t.items, jnp.int32)
    return users, items, jnp.asarray(t.ratings, jnp.float32)


@jax.jit
def _rmse(params: FactorParams, users: jax.Array, items: jax.Array, ratings: jax.Array):
    return jnp.sqrt(jnp.mean(jnp.square(predict(params, users, items) - ratings)))


def fit(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    valid: Triplets | None = None,
    config: TrainConfig = TrainConfig(),
    loss: DataLoss = squared_error,
    log: Callable[[str], None] | None = None,
    patience: int | None = None,
) -> FitResult:
    """Train a biased factor model on COO ratings.

    Args:
        train: training ratings.
        n_users: number of users; every user index must be below it.
        n_items: number of items; every item index must be below it.
        valid: optional held-out ratings, scored (RMSE) after every epoch.
        config: training settings.
        loss: per-element data loss.
        log: called once per epoch with a human-readable progress line.
        patience: with ``valid``, stop after this many epochs without a new
            best validation RMSE. None trains all ``config.epochs``.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for empty or out-of-range inputs or bad settings.
        TrainingDivergedError: when the loss or the parameters become nan/inf.
    """
    if len(train) == 0:
        raise ValueError("train has no ratings")
    if n_users < 1 or n_items < 1:
        raise ValueError(f"n_users and n_items must be >= 1, got {n_users}, {n_items}")
    for field in ("rank", "epochs", "steps_per_epoch"):
        if getattr(config, field) < 1:
            raise ValueError(f"{field} must be >= 1, got {getattr(config, field)}")
    if config.reg < 0:
        raise ValueError(f"reg must be >= 0, got {config.reg}")
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    _check_inputs(train, "train", n_users, n_items)
    if valid is not None:
        _check_inputs(valid, "valid", n_users, n_items)
        if len(valid) == 0:
            valid = None
    optimizer = make_optimizer(config.optimizer, config.learning_rate)

    start = time.perf_counter()
    data = _device_triplets(train)
    valid_data = None if valid is None else _device_triplets(valid)
    params = init_params(
        jax.random.key(config.seed),
        n_users=n_users,
        n_items=n_items,
        rank=config.rank,
        mean=float(np.mean(train.ratings, dtype=np.float64)),
        scale=config.init_scale,
    )
    opt_state = optimizer.init(params)
    hyper = (jnp.float32(config.learning_rate), jnp.float32(config.reg))
    static = dict(optimizer=config.optimizer, steps=config.steps_per_epoch, loss=loss)

    history: list[dict] = []
    best_params, best_epoch, best_rmse = params, 0, math.inf
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        params, opt_state, value, finite = _train_epoch_jit(
            params, opt_state, *data, *hyper, **static
        )
        train_loss = float(value)  # blocks until the step is done
        step_seconds = time.perf_counter() - t0
        if not (math.isfinite(train_loss) and bool(finite)):
            raise TrainingDivergedError(
                f"training diverged at epoch {epoch}/{config.epochs}: train loss "
                f"{train_loss}; the learning rate ({config.learning_rate}, "
                f"{config.optimizer}) is likely too high or reg ({config.reg}) too low"
            )
        valid_rmse = None if valid_data is None else float(_rmse(params, *valid_data))
        rate = len(train) * config.steps_per_epoch / max(step_seconds, 1e-9)
        seconds = time.perf_counter() - start
        history.append(dict(epoch=epoch, seconds=seconds, train_loss=train_loss,
                            valid_rmse=valid_rmse, ratings_per_s=rate))
        if log is not None:
            shown = "n/a" if valid_rmse is None else f"{valid_rmse:.4f}"
            log(
                f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, "
                f"valid RMSE {shown}, {rate:,.0f} ratings/s"
            )
        if valid_rmse is None or valid_rmse < best_rmse:
            best_params, best_epoch = params, epoch
            best_rmse = best_rmse if valid_rmse is None else valid_rmse
        elif patience is not None and epoch - best_epoch >= patience:
            if log is not None:
                log(f"early stop after {patience} epochs without a better valid RMSE; "
                    f"best epoch {best_epoch}")
            break
    return FitResult(best_params, history, best_epoch, time.perf_counter() - start)
