"""Optimizers, learning-rate schedules, and one training epoch under each.

Full-batch optimizers (``gd``, ``normalized_gd``, ``adam``, ``adagrad``) take
``steps_per_epoch`` steps on the whole objective. ``sgd`` is shuffled
minibatch SGD: an epoch is one pass over the ratings in a fresh random order,
``batch_size`` at a time, as a ``jax.lax.scan`` inside one compiled call. Its
updates touch only the rows of each batch's users and items (a scatter-add of
optax's update of the gathered rows), so a step costs O(batch_size * rank),
not O((n_users + n_items) * rank).

Learning rate, reg and the total number of updates are traced values, so one
compiled epoch serves a sweep over them.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from factorflow.engine.factors import FactorParams, predict, project_nonneg
from factorflow.engine.losses import DataLoss, Penalty
from factorflow.choices import GRADIENT_OPTIMIZER_NAMES
from factorflow.engine.config import check_schedule
from factorflow.engine.gradient.layouts import DenseRatings, SparseRatings
from factorflow.engine.gradient.objective import gather_rows, objective_and_grad, rows_objective


def normalized_gd(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Gradient descent on unit-norm directions: each array moves by ``lr * g / |g|``.

    The step no longer depends on the gradient's magnitude, which otherwise
    explodes early under plain squared error. The epsilon keeps an all-zero
    gradient (e.g. biases switched off) at zero.
    """

    def unit(updates, state, params=None):
        del params
        return jax.tree.map(lambda g: g / (jnp.linalg.norm(g) + 1e-12), updates), state

    normalize = optax.GradientTransformation(lambda params: optax.EmptyState(), unit)
    return optax.chain(normalize, optax.scale_by_learning_rate(learning_rate))


#: Optimizer name -> ``factory(learning_rate_or_schedule) -> GradientTransformation``.
OPTIMIZERS: dict[str, Callable[[optax.ScalarOrSchedule], optax.GradientTransformation]] = {
    "adam": optax.adam,
    "adagrad": optax.adagrad,
    "gd": optax.sgd,
    "normalized_gd": normalized_gd,
    "sgd": optax.sgd,
}
#: Optimizers that step on shuffled minibatches instead of the full objective.
MINIBATCH = frozenset({"sgd"})

assert tuple(OPTIMIZERS) == GRADIENT_OPTIMIZER_NAMES, "OPTIMIZERS and the registry disagree"


def make_schedule(
    name: str,
    learning_rate: float | jax.Array,
    *,
    total_steps: int | jax.Array,
    final_fraction: float = 0.01,
) -> optax.ScalarOrSchedule:
    """The learning rate as a function of the update count.

    ``"constant"`` is ``learning_rate`` itself. ``"cosine"`` and
    ``"exponential"`` (optax's schedules) fall from ``learning_rate`` to
    ``final_fraction * learning_rate`` at update ``total_steps``; they are
    evaluated at ``count / total_steps``, so the rate and the length may be
    traced values.

    Raises:
        ValueError: for an unknown name or ``final_fraction`` outside (0, 1].
    """
    check_schedule(name, final_fraction)
    if name == "constant":
        return learning_rate
    if name == "cosine":
        base = optax.cosine_decay_schedule(learning_rate, decay_steps=1, alpha=final_fraction)
    else:
        base = optax.exponential_decay(learning_rate, transition_steps=1, decay_rate=final_fraction)
    return lambda count: base(count / total_steps)


class UpdateSpec(NamedTuple):
    """The static (compile-time) settings of an epoch; hashable."""

    optimizer: str
    schedule: str
    lr_decay: float
    steps: int
    batch_size: int
    loss: DataLoss
    penalty: Penalty
    biases: bool
    nonneg: bool


class Hyper(NamedTuple):
    """The traced settings of an epoch: ``[]`` float32 each."""

    learning_rate: jax.Array
    reg: jax.Array
    total_steps: jax.Array


class EpochStats(NamedTuple):
    """What an epoch reports: ``loss`` (float32), ``finite`` (bool) and
    ``valid_rmse`` (float32, nan without a validation set), each ``[]``."""

    loss: jax.Array
    finite: jax.Array
    valid_rmse: jax.Array


def make_optimizer(spec: UpdateSpec, hyper: Hyper) -> optax.GradientTransformation:
    """The optax transformation of ``spec.optimizer`` under ``spec.schedule``."""
    if spec.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {spec.optimizer!r}; known: {list(OPTIMIZERS)}")
    rate = make_schedule(spec.schedule, hyper.learning_rate, total_steps=hyper.total_steps,
                         final_fraction=spec.lr_decay)
    return OPTIMIZERS[spec.optimizer](rate)


def updates_per_epoch(spec: UpdateSpec, n_ratings: int) -> int:
    """Optimizer updates in one epoch: minibatches for sgd, else ``spec.steps``."""
    if spec.optimizer in MINIBATCH:
        return math.ceil(n_ratings / min(spec.batch_size, n_ratings))
    return spec.steps


def _settings(spec: UpdateSpec, hyper: Hyper) -> dict:
    return dict(reg=hyper.reg, loss=spec.loss, penalty=spec.penalty, biases=spec.biases)


def full_batch_epoch(params, opt_state, data: SparseRatings | DenseRatings, hyper: Hyper,
                     *, spec: UpdateSpec):
    """``spec.steps`` full-batch updates; returns ``(params, opt_state, loss)``,
    ``loss`` being the objective at the start of the last step."""
    tx = make_optimizer(spec, hyper)

    def one_step(carry, _):
        params, opt_state = carry
        value, grads = objective_and_grad(params, data, **_settings(spec, hyper))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return ((project_nonneg(params) if spec.nonneg else params), opt_state), value

    if spec.steps == 1:  # the default: no loop, so XLA updates the tables in place
        (params, opt_state), value = one_step((params, opt_state), None)
        return params, opt_state, value
    (params, opt_state), values = jax.lax.scan(one_step, (params, opt_state), None,
                                               length=spec.steps)
    return params, opt_state, values[-1]


def minibatch_epoch(params, opt_state, data: SparseRatings, key: jax.Array, hyper: Hyper,
                    *, spec: UpdateSpec):
    """One shuffled pass of minibatch SGD; returns ``(params, opt_state, loss)``,
    ``loss`` being the mean of the minibatch objectives over the pass.

    The last batch is padded with weight-0 ratings, so every rating is used
    exactly once and every batch has one shape.
    """
    if not isinstance(data, SparseRatings):
        raise ValueError("minibatch SGD needs the sparse representation")
    n = data.ratings.shape[0]
    size = min(spec.batch_size, n)
    n_batches = math.ceil(n / size)
    pad = n_batches * size - n
    order = jnp.concatenate([jax.random.permutation(key, n), jnp.zeros(pad, jnp.int32)])
    weights = jnp.concatenate([jnp.ones(n, jnp.float32), jnp.zeros(pad, jnp.float32)])
    batches = tuple(a[order].reshape(n_batches, size) for a in data[:3]) + (
        weights.reshape(n_batches, size),)
    tx = make_optimizer(spec, hyper)

    def one_step(carry, batch):
        params, opt_state = carry
        users, items, ratings, w = batch
        rows = gather_rows(params, users, items)
        value, grads = jax.value_and_grad(rows_objective)(rows, ratings, w,
                                                          **_settings(spec, hyper))
        updates, opt_state = tx.update(grads, opt_state, rows)
        p = params._replace(
            mean=params.mean + updates.mean,
            user_factors=params.user_factors.at[users].add(updates.user_factors),
            item_factors=params.item_factors.at[items].add(updates.item_factors),
        )
        if spec.biases:
            p = p._replace(user_bias=p.user_bias.at[users].add(updates.user_bias),
                           item_bias=p.item_bias.at[items].add(updates.item_bias))
        if spec.nonneg:  # only the touched rows can have gone negative
            p = p._replace(
                user_factors=p.user_factors.at[users].set(jnp.maximum(p.user_factors[users], 0)),
                item_factors=p.item_factors.at[items].set(jnp.maximum(p.item_factors[items], 0)),
            )
        return (p, opt_state), value * jnp.sum(w)

    (params, opt_state), sums = jax.lax.scan(one_step, (params, opt_state), batches)
    return params, opt_state, jnp.sum(sums) / n


def train_epoch(
    params: FactorParams,
    opt_state: optax.OptState,
    key: jax.Array,
    epoch: jax.Array,
    data: SparseRatings | DenseRatings,
    valid: SparseRatings | None,
    hyper: Hyper,
    *,
    spec: UpdateSpec,
) -> tuple[FactorParams, optax.OptState, EpochStats]:
    """One epoch, then its report. Pure: jit (and vmap over restarts) at the call site.

    Args:
        params: parameters (one restart's).
        opt_state: the optimizer's state.
        key: the restart's PRNG key; the epoch's shuffle key is
            ``fold_in(key, epoch)`` (used by sgd only).
        epoch: ``[]`` int32, 1-based.
        data: training ratings.
        valid: validation ratings or None.
        hyper: learning rate, reg, total updates.
        spec: static settings.

    Returns:
        ``(params, opt_state, EpochStats)``.
    """
    if spec.optimizer in MINIBATCH:
        shuffle_key = jax.random.fold_in(key, epoch)
        params, opt_state, loss = minibatch_epoch(params, opt_state, data, shuffle_key, hyper,
                                                  spec=spec)
    else:
        params, opt_state, loss = full_batch_epoch(params, opt_state, data, hyper, spec=spec)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    if valid is None:
        valid_rmse = jnp.float32(jnp.nan)
    else:
        error = predict(params, valid.users, valid.items) - valid.ratings
        valid_rmse = jnp.sqrt(jnp.mean(jnp.square(error)))
    return params, opt_state, EpochStats(loss, finite & jnp.isfinite(loss), valid_rmse)
