"""Random restarts: one vmapped program equals the best of separate fits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine.losses import l2_penalty, squared_error
from factorflow.engine.gradient.optimizers import Hyper, UpdateSpec
from factorflow.engine.gradient.layouts import SparseRatings
from factorflow.engine.gradient.restarts import (
    batched_epoch,
    best_restart,
    init_state,
    restart_keys,
    single_epoch,
    take_restart,
)
from factorflow.engine import TrainConfig, fit
from tests.helpers import SMALL, synthetic

pytestmark = pytest.mark.unit

SPEC = UpdateSpec("adam", "constant", 0.01, 1, 1024, squared_error, l2_penalty, True, False)
HYPER = Hyper(jnp.float32(0.05), jnp.float32(0.05), jnp.float32(10.0))
SHAPE = dict(n_users=6, n_items=5, rank=3, scale=0.1)


def close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or dict(rtol=1e-5,
                                                                                   atol=1e-6)))


class TestRestartKeys:
    def test_is_split(self):
        keys = restart_keys(jax.random.key(3), 4)
        assert keys.shape == (4,)
        np.testing.assert_array_equal(jax.random.key_data(keys),
                                      jax.random.key_data(jax.random.split(jax.random.key(3), 4)))
        with pytest.raises(ValueError, match="restarts must be >= 1"):
            restart_keys(jax.random.key(0), 0)


class TestBestRestart:
    def test_lowest_and_nan_is_worst(self):
        assert best_restart(np.array([0.5, 0.2, 0.9])) == 1
        assert best_restart(np.array([np.nan, 0.7])) == 1
        assert best_restart(np.float32(1.0)) == 0


class TestTakeRestart:
    def test_slices_every_leaf(self):
        tree = {"a": np.arange(6).reshape(3, 2), "b": np.arange(3)}
        got = take_restart(tree, 2)
        np.testing.assert_array_equal(got["a"], [4, 5])
        assert int(got["b"]) == 2


class TestInitState:
    def test_restart_r_starts_where_a_single_fit_with_key_r_does(self):
        keys = restart_keys(jax.random.key(0), 3)
        params, opt_state = init_state(keys, np.float32(3.0), HYPER, spec=SPEC, batched=True,
                                       **SHAPE)
        assert params.user_factors.shape == (3, 6, 3) and params.mean.shape == (3,)
        for r in range(3):
            one = init_state(keys[r], np.float32(3.0), HYPER, spec=SPEC, batched=False, **SHAPE)
            for a, b in zip(jax.tree.leaves(take_restart((params, opt_state), r)),
                            jax.tree.leaves(one)):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class TestBatchedEpoch:
    def test_equals_each_restart_alone_and_compiles_once(self):
        rng = np.random.default_rng(0)
        data = SparseRatings(rng.integers(0, 6, 20).astype(np.int32),
                             rng.integers(0, 5, 20).astype(np.int32),
                             rng.uniform(1, 5, 20).astype(np.float32))
        keys = restart_keys(jax.random.key(1), 3)
        state = init_state(keys, np.float32(3.0), HYPER, spec=SPEC, batched=True, **SHAPE)
        args = (np.int32(1), data, data, HYPER)
        fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # the epochs donate opt_state
        params, opt_state, stats = batched_epoch(*fresh(state), keys, *args, spec=SPEC)
        assert stats.loss.shape == stats.valid_rmse.shape == (3,)
        for r in range(3):
            one = single_epoch(*fresh(take_restart(state, r)), keys[r], *args, spec=SPEC)
            close(take_restart((params, opt_state, stats), r), one)
        size = batched_epoch._cache_size()
        batched_epoch(params, opt_state, keys, np.int32(2), data, data, HYPER, spec=SPEC)
        assert batched_epoch._cache_size() == size


class TestFitWithRestarts:
    @pytest.mark.parametrize("with_valid, optimizer", [(True, "adam"), (False, "sgd")])
    def test_equals_the_best_of_separate_fits(self, small_data, with_valid, optimizer):
        traces = []

        def counting_loss(pred, target):
            traces.append(1)  # only while tracing
            return squared_error(pred, target)

        train, valid = small_data
        valid = valid if with_valid else None
        config = TrainConfig(rank=4, epochs=6, optimizer=optimizer, restarts=3)
        key = jax.random.key(7)
        lines = []
        together = fit(train, valid=valid, config=config, loss=counting_loss, key=key,
                       log=lines.append, **SMALL)
        assert len(traces) == 2  # the loss's validation probe + ONE compiled epoch for 3 restarts
        singles = [fit(train, valid=valid, config=config._replace(restarts=1), key=k,
                       loss=counting_loss, **SMALL) for k in jax.random.split(key, 3)]
        assert len(traces) == 3  # one more program, shared by the three single fits
        if with_valid:
            scores = [min(h["valid_rmse"] for h in s.history) for s in singles]
        else:
            scores = [s.history[-1]["train_loss"] for s in singles]
        best = singles[int(np.argmin(scores))]
        close(together.params, best.params, rtol=1e-4, atol=1e-5)
        assert together.best_epoch == best.best_epoch
        key_name = "valid_rmse" if with_valid else "train_loss"
        for epoch, h in enumerate(together.history):
            per_restart = [s.history[epoch][key_name] for s in singles]
            assert h[key_name] == pytest.approx(min(per_restart), rel=1e-4)
            assert h["restart"] == int(np.argmin(per_restart)) and h["restarts"] == 3
        assert "best of 3 restarts" in lines[0]
        assert together.params.user_factors.shape == (60, 4)
