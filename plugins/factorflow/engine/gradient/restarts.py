"""Random restarts as one vmapped program.

The factor model's objective is non-convex, so a common remedy is to train
from several random starts and keep the best. Here the ``R`` starts are not a
Python loop: parameters and optimizer state carry a leading ``[R]`` axis and
the epoch is ``jax.vmap``-ed over it, so one compiled call advances every
restart (one compilation, and the accelerator sees ``R`` times the work per
launch). Restart ``r`` runs exactly as a single fit whose key is
``jax.random.split(key, R)[r]``.
"""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine.factors import init_params, project_nonneg
from factorflow.engine.gradient.optimizers import make_optimizer, train_epoch
from factorflow.engine.warm import WarmStart, blend

T = TypeVar("T")

# Module level, so compiled epochs are shared by every fit with the same static
# settings and data shapes. The data are arguments, not closed-over constants,
# so XLA does not bake the training set into the program. The optimizer state
# is donated (the caller only ever uses the returned one), so its moments are
# updated in place; the parameters are not, since fit keeps the best epoch's.
single_epoch = jax.jit(train_epoch, static_argnames=("spec",), donate_argnums=(1,))


@partial(jax.jit, static_argnames=("spec",), donate_argnums=(1,))
def batched_epoch(params, opt_state, keys, epoch, data, valid, hyper, *, spec):
    """:func:`factorflow.engine.gradient.optimizers.train_epoch` over ``[R]`` restarts at once.

    ``params``, ``opt_state`` and ``keys`` carry a leading ``[R]`` axis; the
    data, the epoch number and the hyper-parameters are shared. Every field of
    the returned ``EpochStats`` is ``[R]``.
    """
    one = partial(train_epoch, spec=spec)
    return jax.vmap(one, in_axes=(0, 0, 0, None, None, None, None))(
        params, opt_state, keys, epoch, data, valid, hyper
    )


def init_state(keys, mean, hyper, *, spec, n_users, n_items, rank, scale, batched,
               warm: WarmStart | None = None):
    """Initial ``(params, opt_state)``, for one key or stacked for ``[R]`` keys.

    Each restart is initialized on its own (a short Python loop, once per fit,
    through JAX's cached random kernels) and the results are stacked: compiling
    a vmapped initializer would cost more than it saves, and this way restart
    ``r`` starts bit for bit where a single fit with ``keys[r]`` starts.

    Args:
        keys: one PRNG key, or ``[R]`` keys when ``batched``.
        mean: ``[]`` initial global offset.
        hyper: :class:`factorflow.engine.gradient.optimizers.Hyper` (the optimizer's settings).
        spec: :class:`factorflow.engine.gradient.optimizers.UpdateSpec` (optimizer, ``nonneg``).
        n_users: number of users.
        n_items: number of items.
        rank: number of factors.
        scale: initial factor scale.
        batched: give every leaf a leading ``[R]`` axis, one slice per key.
        warm: a warm start: its known rows (biases, leading factor columns)
            and mean replace the random ones (projected to ``>= 0`` with
            ``spec.nonneg``), in every restart; the optimizer state is that of
            the blended parameters.

    Returns:
        ``(FactorParams, optax state)``; restart ``r``'s slice equals the
        unbatched result for ``keys[r]``.
    """

    def one(key):
        params = init_params(key, n_users=n_users, n_items=n_items, rank=rank, mean=mean,
                             scale=scale, nonneg=spec.nonneg)
        if warm is not None:
            params = blend(warm, params, jnp, biases=spec.biases)
            params = project_nonneg(params) if spec.nonneg else params
        return params, make_optimizer(spec, hyper).init(params)

    if not batched:
        return one(keys)
    states = [one(key) for key in keys]
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def restart_keys(key: jax.Array, restarts: int) -> jax.Array:
    """``[restarts]`` keys, one per restart: ``jax.random.split(key, restarts)``."""
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    return jax.random.split(key, restarts)


def best_restart(scores: np.ndarray) -> int:
    """Index of the lowest of ``[R]`` scores (nan counts as worst)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    return int(np.argmin(np.where(np.isnan(scores), np.inf, scores)))


def take_restart(tree: T, r: int) -> T:
    """Restart ``r``'s slice of a pytree whose leaves carry a leading ``[R]`` axis."""
    return jax.tree.map(lambda leaf: leaf[r], tree)
