"""The row-slotted layout: the same objective and gradient as the flat COO objective."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from factorflow.engine.factors import init_params
from factorflow.engine.losses import get_loss
from factorflow.engine.triplets import Triplets
from factorflow.engine.gradient.layouts import to_device
from factorflow.engine.gradient.objective import objective, objective_and_grad
from factorflow.engine.gradient.slots import chunk_size, to_slots

pytestmark = pytest.mark.unit


def _ratings(n_users, n_items, n, seed=0):
    rng = np.random.default_rng(seed)
    pairs = rng.choice(n_users * n_items, n, replace=False)
    return Triplets((pairs // n_items).astype(np.int32), (pairs % n_items).astype(np.int32),
                    rng.integers(1, 6, n).astype(np.float32))


@pytest.mark.parametrize("loss_name, biases", [("squared", True), ("huber", True),
                                               ("absolute", True), ("squared", False)])
def test_same_objective_and_gradient_as_the_flat_layout(loss_name, biases):
    # Long and short rows (a user with 90 ratings spans several chunks), rows
    # without ratings, and padding slots and chunks on both sides.
    n_users, n_items = 40, 120
    rest = _ratings(n_users - 3, n_items - 5, 700)  # users 1..37 (38, 39 have none)
    t = Triplets(np.r_[np.zeros(90, np.int32), rest.users + 1],
                 np.r_[np.arange(90, dtype=np.int32), rest.items],
                 np.r_[np.full(90, 4.0, np.float32), rest.ratings])
    params = init_params(jax.random.key(1), n_users=n_users, n_items=n_items, rank=5,
                         mean=3.0, scale=0.5)
    settings = dict(reg=0.1, loss=get_loss(loss_name), biases=biases)
    flat = to_device(t, n_users=n_users, n_items=n_items, representation="sparse")
    slotted = to_slots(t, n_users=n_users, n_items=n_items)
    assert int((slotted.user_item >= 0).sum()) == len(t)
    assert int((slotted.item_pos < slotted.user_item.size).sum()) == len(t)
    v1, g1 = jax.jit(jax.value_and_grad(lambda p, d: objective(p, d, **settings)))(params, flat)
    v2, g2 = jax.jit(lambda p, d: objective_and_grad(p, d, **settings))(params, slotted)
    np.testing.assert_allclose(v1, v2, rtol=1e-5)
    for name, a, b in zip(params._fields, g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=name)
    v3 = jax.jit(lambda p, d: objective(p, d, **settings))(params, slotted)
    np.testing.assert_allclose(v1, v3, rtol=1e-5)


def test_restarts_vmap_over_the_slotted_gradient():
    t = _ratings(30, 25, 300, seed=2)
    slotted = to_slots(t, n_users=30, n_items=25)
    flat = to_device(t, n_users=30, n_items=25, representation="sparse")
    keys = jax.random.split(jax.random.key(3), 3)
    params = jax.vmap(lambda k: init_params(k, n_users=30, n_items=25, rank=3, mean=3.0,
                                            scale=0.3))(keys)
    batched = jax.jit(jax.vmap(lambda p: objective_and_grad(p, slotted, reg=0.05)))(params)
    for r in range(3):
        one = jax.tree.map(lambda x: x[r], params)
        v, g = jax.value_and_grad(lambda p: objective(p, flat, reg=0.05))(one)
        np.testing.assert_allclose(batched[0][r], v, rtol=1e-5)
        for a, b in zip(g, jax.tree.map(lambda x: x[r], batched[1])):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_chunk_size_trades_padding_against_chunks():
    assert chunk_size(np.full(100, 50)) == 32           # long rows: few, full chunks
    assert chunk_size(np.ones(1000, np.int64)) == 4     # one rating per row: least padding
    assert chunk_size(np.array([0, 0, 3])) == 4


def test_training_on_slots_matches_the_flat_layout(monkeypatch):
    """The gradient fit slots large full-batch problems; the result is the flat layout's."""
    from factorflow.engine import TrainConfig, fit
    from factorflow.engine.gradient import fit as gradient_fit
    from tests.helpers import synthetic

    train, valid = synthetic()  # 21,600 train ratings: above SLOTTED_MIN_RATINGS, so slotted
    config = TrainConfig(optimizer="adam", epochs=4, restarts=2)
    slotted = fit(train, n_users=400, n_items=300, valid=valid, config=config)
    monkeypatch.setattr(gradient_fit, "SLOTTED_MIN_RATINGS", 10**9)  # the flat COO layout instead
    flat = fit(train, n_users=400, n_items=300, valid=valid, config=config)
    for name, a, b in zip(slotted.params._fields, slotted.params, flat.params):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5, err_msg=name)
    for a, b in zip(slotted.history, flat.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
