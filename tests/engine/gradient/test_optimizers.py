"""Optimizers, schedules and epochs against hand-written NumPy updates."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from factorflow import choices
from factorflow.engine.factors import FactorParams
from factorflow.engine.losses import l2_penalty, squared_error
from factorflow.engine.gradient.optimizers import (
    MINIBATCH,
    OPTIMIZERS,
    Hyper,
    UpdateSpec,
    full_batch_epoch,
    make_optimizer,
    make_schedule,
    minibatch_epoch,
    normalized_gd,
)
from factorflow.engine.gradient.layouts import SparseRatings
from factorflow.engine.gradient.restarts import single_epoch
from factorflow.engine import TrainConfig, fit
from tests.helpers import jit_twice, random_params, synthetic

pytestmark = pytest.mark.unit

N_USERS, N_ITEMS, RANK, REG = 4, 3, 2, 0.1


def spec(optimizer="gd", **kw):
    base = dict(optimizer=optimizer, schedule="constant", lr_decay=0.01, steps=1, batch_size=1024,
                loss=squared_error, penalty=l2_penalty, biases=True, nonneg=False)
    return UpdateSpec(**{**base, **kw})


def hyper(lr=0.1, total=10.0):
    return Hyper(jnp.float32(lr), jnp.float32(REG), jnp.float32(total))


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    users = np.array([0, 1, 1, 2, 3, 3, 0], np.int32)
    items = np.array([0, 0, 2, 1, 1, 2, 2], np.int32)
    ratings = rng.uniform(1, 5, 7).astype(np.float32)
    return SparseRatings(users, items, ratings), random_params(N_USERS, N_ITEMS, RANK, seed=3,
                                                                scale=0.5)


def numpy_sgd_step(p, users, items, ratings, weights, lr):
    """One update of the weighted-mean objective (squared error + per-rating L2)."""
    mean, bu, bi, pu, qi = (np.array(a, np.float64) for a in p)
    e = mean + bu[users] + bi[items] + np.sum(pu[users] * qi[items], 1) - ratings
    c = 2 * weights / weights.sum()
    g = [np.sum(c * e), np.zeros_like(bu), np.zeros_like(bi), np.zeros_like(pu), np.zeros_like(qi)]
    np.add.at(g[1], users, c * (e + REG * bu[users]))
    np.add.at(g[2], items, c * (e + REG * bi[items]))
    np.add.at(g[3], users, c[:, None] * (e[:, None] * qi[items] + REG * pu[users]))
    np.add.at(g[4], items, c[:, None] * (e[:, None] * pu[users] + REG * qi[items]))
    return FactorParams(*(a - lr * d for a, d in zip((mean, bu, bi, pu, qi), g)))


def assert_params_close(got, want, rtol=1e-5):
    for name, a, b in zip(FactorParams._fields, got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=1e-6, err_msg=name)


class TestRegistry:
    def test_names_match_the_jax_free_registry(self):
        assert tuple(OPTIMIZERS) == choices.GRADIENT_OPTIMIZER_NAMES
        assert choices.OPTIMIZER_NAMES == choices.SAMPLER_NAMES + tuple(OPTIMIZERS)
        assert MINIBATCH == {"sgd"}
        assert OPTIMIZERS["adam"] is optax.adam and OPTIMIZERS["adagrad"] is optax.adagrad


class TestNormalizedGd:
    def test_each_array_moves_by_lr_along_its_unit_gradient(self):
        grads = {"a": np.array([3.0, 4.0], np.float32), "b": np.zeros(2, np.float32)}

        def update(g):
            tx = normalized_gd(0.5)
            return tx.update(g, tx.init(g))[0]

        got = jit_twice(update, grads)
        np.testing.assert_allclose(np.asarray(got["a"]), [-0.3, -0.4], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(got["b"]), [0.0, 0.0])


class TestMakeSchedule:
    def test_constant_is_the_rate_itself(self):
        assert make_schedule("constant", 0.3, total_steps=5) == 0.3

    @pytest.mark.parametrize("name", ["cosine", "exponential"])
    def test_decays_to_the_final_fraction(self, name):
        counts = np.array([0, 5, 10, 20], np.float32)

        def rates(lr, total, count):
            return make_schedule(name, lr, total_steps=total, final_fraction=0.1)(count)

        got = np.asarray(jit_twice(rates, np.float32(2.0), np.float32(10.0), counts))
        t = np.minimum(counts / 10.0, 1.0)
        if name == "cosine":
            want = 2.0 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))
        else:
            want = 2.0 * 0.1 ** (counts / 10.0)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert got[2] == pytest.approx(0.2, rel=1e-5)

    def test_errors(self):
        with pytest.raises(ValueError, match="unknown schedule 'step'"):
            make_schedule("step", 0.1, total_steps=1)
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            make_schedule("cosine", 0.1, total_steps=1, final_fraction=1.5)


class TestMakeOptimizer:
    def test_schedule_steps_once_per_update(self):
        tx = make_optimizer(spec("sgd", schedule="exponential", lr_decay=0.5), hyper(0.1, 2.0))
        grads = {"w": jnp.ones(1)}
        state = tx.init(grads)
        got = []
        for _ in range(3):
            updates, state = tx.update(grads, state)
            got.append(float(updates["w"][0]))
        np.testing.assert_allclose(got, [-0.1, -0.1 * 0.5**0.5, -0.05], rtol=1e-5)

    def test_unknown(self):
        with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
            make_optimizer(spec("lbfgs"), hyper())


class TestFullBatchEpoch:
    def test_gd_steps_match_numpy(self, tiny):
        data, params = tiny
        s = spec("gd", steps=2)
        tx = make_optimizer(s, hyper())
        got, _, loss = jit_twice(partial(full_batch_epoch, spec=s), params, tx.init(params), data,
                                 hyper())
        want = params
        for _ in range(2):
            want = numpy_sgd_step(want, *data[:3], np.ones(7), 0.1)
        assert_params_close(got, want)
        assert np.isfinite(float(loss))

    def test_nonneg_projects_after_each_update(self, tiny):
        data, params = tiny
        s = spec("gd", nonneg=True)
        tx = make_optimizer(s, hyper(lr=1.0))
        got, _, _ = jax.jit(partial(full_batch_epoch, spec=s))(params, tx.init(params), data,
                                                               hyper(lr=1.0))
        want = numpy_sgd_step(params, *data[:3], np.ones(7), 1.0)
        want = want._replace(user_factors=np.maximum(want.user_factors, 0),
                             item_factors=np.maximum(want.item_factors, 0))
        assert_params_close(got, want)
        assert np.any(want.user_factors == 0) and np.any(np.asarray(params.user_factors) < 0)


class TestMinibatchEpoch:
    def test_shuffled_batches_match_numpy(self, tiny):
        data, params = tiny
        s = spec("sgd", batch_size=3)
        key = jax.random.key(5)
        tx = make_optimizer(s, hyper())
        got, _, loss = jit_twice(partial(minibatch_epoch, spec=s), params, tx.init(params),
                                 data, key, hyper())
        # Three batches of 3: the shuffled 7 ratings, then two weight-0 pads.
        order = np.r_[np.asarray(jax.random.permutation(key, 7)), 0, 0]
        weights = np.r_[np.ones(7), 0, 0]
        want = params
        for b in range(3):
            idx = order[3 * b: 3 * b + 3]
            want = numpy_sgd_step(want, *(np.asarray(a)[idx] for a in data[:3]),
                                  weights[3 * b: 3 * b + 3], 0.1)
        assert_params_close(got, want)
        assert np.isfinite(float(loss))

    def test_one_batch_is_a_gd_step_and_schedule_counts_batches(self, tiny):
        data, params = tiny
        s = spec("sgd", batch_size=4, schedule="cosine")
        tx = make_optimizer(s, hyper())
        got, state, _ = jax.jit(partial(minibatch_epoch, spec=s))(
            params, tx.init(params), data, jax.random.key(0), hyper())
        assert int(optax.tree_utils.tree_get(state, "count")) == 2  # ceil(7 / 4) updates
        big = spec("sgd", batch_size=100)
        one, _, _ = jax.jit(partial(minibatch_epoch, spec=big))(
            params, tx.init(params), data, jax.random.key(0), hyper())
        assert_params_close(one, numpy_sgd_step(params, *data[:3], np.ones(7), 0.1))


class TestTrainEpoch:
    def test_reports_valid_rmse_and_finiteness(self, tiny):
        data, params = tiny
        s = spec("adam")
        state = make_optimizer(s, hyper()).init(params)
        args = (jax.random.key(0), np.int32(1), data, data, hyper())
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # single_epoch donates opt_state
        new, _, stats = single_epoch(params, fresh(state), *args, spec=s)
        p = [np.asarray(a, np.float64) for a in new]
        u, i, r = (np.asarray(a) for a in data[:3])
        pred = p[0] + p[1][u] + p[2][i] + np.sum(p[3][u] * p[4][i], 1)
        assert float(stats.valid_rmse) == pytest.approx(np.sqrt(np.mean((pred - r) ** 2)), rel=1e-5)
        assert bool(stats.finite)
        bad = params._replace(user_factors=np.full_like(params.user_factors, np.nan))
        _, _, stats = single_epoch(bad, fresh(state), *args, spec=s)
        assert not bool(stats.finite)
        # Same static settings and shapes: no second compilation.
        size = single_epoch._cache_size()
        single_epoch(params, fresh(state), *args, spec=s)
        assert single_epoch._cache_size() == size


class TestFitWithEachOptimizer:
    @pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("adagrad", 0.1), ("gd", 0.5),
                                               ("normalized_gd", 0.5), ("sgd", 0.05)])
    def test_reduces_the_loss(self, optimizer, lr):
        train, valid = synthetic(n=1500, n_users=60, n_items=50)
        config = TrainConfig(rank=4, epochs=5, optimizer=optimizer, learning_rate=lr)
        history = fit(train, valid=valid, n_users=60, n_items=50, config=config).history
        assert history[-1]["train_loss"] < history[0]["train_loss"], optimizer
        assert history[-1]["valid_rmse"] < history[0]["valid_rmse"], optimizer

    def test_cosine_schedule_in_a_fit(self):
        train, valid = synthetic(n=1500, n_users=60, n_items=50)
        config = TrainConfig(rank=4, epochs=5, schedule="cosine", optimizer="sgd")
        history = fit(train, valid=valid, n_users=60, n_items=50, config=config).history
        assert history[-1]["train_loss"] < history[0]["train_loss"]
