"""Test helpers: jit-twice checks, synthetic ratings, random parameters."""

from functools import partial

import jax
import numpy as np


def _reversed(a):
    # New values, same shape, dtype and array type (NumPy vs jax.Array).
    if not np.ndim(a):
        return a
    return a[::-1] if isinstance(a, jax.Array) else np.asarray(a)[::-1].copy()


def jit_twice(fn, *args, **static):
    """``jax.jit(fn)(*args)``, after checking a same-shape second call does not recompile.

    ``static`` keyword settings are bound with ``functools.partial`` (closed over,
    so not traced). The second call gets new values of the same shapes/dtypes.
    """
    jitted = jax.jit(partial(fn, **static))
    first = jitted(*args)
    jax.block_until_ready(first)
    assert jitted._cache_size() == 1
    again = jax.tree.map(_reversed, args)
    jax.block_until_ready(jitted(*again))
    assert jitted._cache_size() == 1, "second call with the same shapes recompiled"
    return first


def synthetic(n_users=400, n_items=300, n=24_000, true_rank=4, noise=0.4, seed=0):
    """Low-rank + biases + noise ratings clipped to [1, 5], split 90/10 (train, valid)."""
    from factorflow.engine.triplets import Triplets

    rng = np.random.default_rng(seed)
    p = rng.normal(0.0, 0.7, (n_users, true_rank))
    q = rng.normal(0.0, 0.7, (n_items, true_rank))
    bu, bi = rng.normal(0.0, 0.3, n_users), rng.normal(0.0, 0.5, n_items)
    flat = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = (flat // n_items).astype(np.int32), (flat % n_items).astype(np.int32)
    r = 3.5 + bu[u] + bi[i] + np.sum(p[u] * q[i], 1) + rng.normal(0.0, noise, n)
    r = np.clip(r, 1.0, 5.0).astype(np.float32)
    cut = int(0.9 * n)
    return Triplets(u[:cut], i[:cut], r[:cut]), Triplets(u[cut:], i[cut:], r[cut:])


def random_params(n_users, n_items, rank, seed=0, scale=1.0):
    """FactorParams with every field random (float32 NumPy)."""
    from factorflow.engine.factors import FactorParams

    rng = np.random.default_rng(seed)
    return FactorParams(
        np.float32(rng.normal()),
        *(scale * rng.normal(size=s).astype(np.float32)
          for s in [(n_users,), (n_items,), (n_users, rank), (n_items, rank)])
    )


def half_observed(n_users, n_items, rank, seed=42):
    """``(coo, values, mask, params)``: about half of an ``[n_users, n_items]`` matrix
    observed (corners always), its COO triplets and random parameters."""
    from factorflow.engine.triplets import Triplets

    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < 0.5
    mask[0, 0] = mask[-1, -1] = True
    values = np.where(mask, rng.uniform(1.0, 5.0, mask.shape), 0.0).astype(np.float32)
    users, items = np.nonzero(mask)
    coo = Triplets(users.astype(np.int32), items.astype(np.int32), values[users, items])
    return coo, values, mask, random_params(n_users, n_items, rank, seed=1, scale=0.7)


#: The shape of the small synthetic set the engine tests share (``small_data``).
SMALL = dict(n_users=60, n_items=50)
