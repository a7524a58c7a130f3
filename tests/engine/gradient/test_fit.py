"""The gradient fit loop: gradients against hand derivations, and fits on synthetic data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine.metrics import fit_baseline, predict_baseline, rmse
from factorflow.engine.losses import InvalidLossError, masked_squared_error, squared_error
from factorflow.engine.triplets import Triplets
from factorflow.engine import FactorParams, FitResult, TrainConfig, TrainingDivergedError, fit
from factorflow.engine.factors import init_params, predict
from tests.helpers import SMALL, synthetic

pytestmark = pytest.mark.unit

CUSTOM = "tests.custom_losses:weighted_squared"


def small_fit(data, on_epoch=None, **config):
    train, valid = data
    return fit(train, valid=valid, config=TrainConfig(**{"rank": 4, "epochs": 5, "optimizer": "adam", **config}),
               on_epoch=on_epoch, **SMALL)


class TestMaskedAutodiff:
    """The seed formulation: ½‖M ∘ (R − U Vᵀ)‖², gradients E V and Eᵀ U."""

    @staticmethod
    def half_sse(u_mat, v_mat, ratings, mask):
        return 0.5 * jnp.sum(masked_squared_error(u_mat @ v_mat.T, ratings, mask))

    @pytest.fixture(scope="class")
    def problem(self):
        rng = np.random.default_rng(42)
        mask = rng.random((6, 5)) < 0.5
        ratings = rng.uniform(1.0, 5.0, (6, 5)).astype(np.float32)
        return ratings, mask, rng.normal(size=(6, 3)), rng.normal(size=(5, 3))

    def test_gradient_equals_analytic_and_central_differences(self, problem):
        ratings, mask, u_mat, v_mat = problem
        with jax.enable_x64(True):
            grad_fn = jax.jit(jax.grad(self.half_sse, argnums=(0, 1)))
            grad_u, grad_v = grad_fn(u_mat, v_mat, ratings.astype(np.float64), mask)
            f = jax.jit(self.half_sse)
            eps, fd = 1e-6, np.zeros_like(u_mat)
            for idx in np.ndindex(u_mat.shape):
                step = np.zeros_like(u_mat)
                step[idx] = eps
                fd[idx] = (f(u_mat + step, v_mat, ratings, mask)
                           - f(u_mat - step, v_mat, ratings, mask)) / (2 * eps)
            assert grad_fn._cache_size() == 1
        e = np.where(mask, u_mat @ v_mat.T - ratings, 0.0)
        np.testing.assert_allclose(np.asarray(grad_u), e @ v_mat, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(grad_v), e.T @ u_mat, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(fd, e @ v_mat, atol=1e-5)
        # The check has teeth: a dropped mask gives a clearly different gradient.
        unmasked = (u_mat @ v_mat.T - np.where(mask, ratings, 0.0)) @ v_mat
        assert np.abs(unmasked - e @ v_mat).max() > 1e-1


class TestInitParams:
    def test_shapes_dtype_and_nonneg(self):
        params = init_params(jax.random.key(0), n_users=7, n_items=5, rank=3, mean=3.5)
        assert params.user_factors.shape == (7, 3) and params.item_factors.shape == (5, 3)
        assert float(params.mean) == 3.5 and not np.any(np.asarray(params.user_bias))
        assert all(p.dtype == jnp.float32 for p in params)
        nonneg = init_params(jax.random.key(0), n_users=7, n_items=5, rank=3, mean=0.0,
                             nonneg=True)
        np.testing.assert_allclose(np.asarray(nonneg.user_factors),
                                   np.abs(np.asarray(params.user_factors)))
        with pytest.raises(ValueError, match="rank must be >= 1"):
            init_params(jax.random.key(0), n_users=2, n_items=2, rank=0, mean=0.0)


@pytest.fixture(scope="module")
def synthetic_fit():
    train, valid = synthetic()
    lines: list[str] = []
    result = fit(train, n_users=400, n_items=300, valid=valid, log=lines.append,
                 config=TrainConfig(optimizer="adam"))
    return train, valid, result, lines


class TestFit:
    def test_beats_bias_baseline(self, synthetic_fit):
        train, valid, result, _ = synthetic_fit
        baseline = fit_baseline(train, n_users=400, n_items=300)
        base_rmse = rmse(predict_baseline(baseline, valid.users, valid.items), valid.ratings)
        model_rmse = rmse(np.asarray(predict(result.params, valid.users, valid.items)),
                          valid.ratings)
        assert model_rmse < 0.8 * base_rmse, (model_rmse, base_rmse)
        assert model_rmse == pytest.approx(result.history[result.best_epoch - 1]["valid_rmse"],
                                           rel=1e-5)

    def test_history_and_log(self, synthetic_fit):
        _, _, result, lines = synthetic_fit
        assert isinstance(result, FitResult) and isinstance(result.params, FactorParams)
        epochs = TrainConfig(optimizer="adam").epochs
        assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
        assert set(result.history[0]) == {"epoch", "seconds", "train_loss", "train_rmse",
                                          "valid_rmse", "ratings_per_s", "restart", "restarts"}
        assert all(h["ratings_per_s"] > 0 and h["restarts"] == 1 for h in result.history)
        assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
        assert len(lines) == epochs and lines[0].startswith(f"epoch 1/{epochs}:")
        assert "valid RMSE" in lines[0] and "ratings/s" in lines[0]
        assert result.params.user_factors.dtype == jnp.float32

    # These configs (and the SMALL data) recur across the test files on purpose:
    # the compiled epochs are shared, which keeps the suite fast.
    @pytest.mark.parametrize("config", [{}, {"optimizer": "sgd"},
                                        {"optimizer": "gd", "restarts": 2}])
    def test_deterministic_for_a_seed(self, small_data, config):
        a = small_fit(small_data, epochs=3, **config).params
        b = small_fit(small_data, epochs=3, **config).params
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        c = small_fit(small_data, epochs=3, seed=1, **config).params
        assert not np.array_equal(np.asarray(a.user_factors), np.asarray(c.user_factors))

    @pytest.mark.parametrize("config", [{"optimizer": "gd"}, {"optimizer": "sgd"},
                                        {"optimizer": "gd", "restarts": 2}])
    def test_divergence_names_epoch_and_cause(self, small_data, config):
        with pytest.raises(TrainingDivergedError, match=r"epoch \d+/50.*learning rate") as info:
            small_fit(small_data, epochs=50, learning_rate=1e6, **config)
        assert isinstance(info.value, ValueError)
        if "restarts" in config:
            assert "of 2)" in str(info.value)

    @pytest.mark.parametrize("where", ["config", "kwarg"])
    def test_early_stopping_keeps_best_epoch(self, where):
        # Rank 32 without L2 on ~20 ratings per user overfits fast.
        train, valid = synthetic(n_users=100, n_items=80, n=2200, seed=3)
        config = TrainConfig(optimizer="adam", epochs=200, reg=0.0, learning_rate=0.1,
                             patience=3 if where == "config" else None)
        kwargs = {"patience": 3} if where == "kwarg" else {}
        result = fit(train, n_users=100, n_items=80, valid=valid, config=config, **kwargs)
        rmses = [h["valid_rmse"] for h in result.history]
        assert len(rmses) < 200
        assert result.best_epoch == int(np.argmin(rmses)) + 1
        assert len(rmses) == result.best_epoch + 3
        got = rmse(np.asarray(predict(result.params, valid.users, valid.items)), valid.ratings)
        assert got == pytest.approx(min(rmses), rel=1e-5)
        assert got < rmses[-1]

    def test_epoch_compiles_once(self, small_data):
        traces = []

        def counting_loss(pred, target):
            traces.append(1)  # runs only while JAX traces, not per execution
            return squared_error(pred, target)

        before = len(traces)
        train, valid = small_data
        config = TrainConfig(optimizer="adam", rank=4, epochs=6)
        fit(train, valid=valid, config=config, loss=counting_loss, **SMALL)
        assert len(traces) == before + 2  # resolve_loss's probe + one trace for six epochs
        # Rate, reg and the number of epochs are traced: a sweep reuses the program.
        config = config._replace(learning_rate=0.01, reg=0.5, epochs=2)
        fit(train, valid=valid, config=config, loss=counting_loss, **SMALL)
        assert len(traces) == before + 2

    def test_on_epoch_sees_each_epochs_params(self, small_data):
        seen = []
        result = small_fit(small_data, epochs=3, on_epoch=lambda e, p: seen.append((e, p)))
        assert [e for e, _ in seen] == [1, 2, 3]
        np.testing.assert_array_equal(np.asarray(seen[result.best_epoch - 1][1].user_factors),
                                      np.asarray(result.params.user_factors))

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            (dict(train=Triplets(*(np.zeros(0, t) for t in (np.int32, np.int32, np.float32)))),
             "no ratings"),
            (dict(n_users=3), r"user index range \[0, \d+\] outside \[0, 3\)"),
            (dict(n_items=3), r"item index range"),
            (dict(config=TrainConfig(optimizer="adam", rank=0)), "rank must be >= 1"),
            (dict(config=TrainConfig(optimizer="adam", epochs=0)), "epochs must be >= 1"),
            (dict(config=TrainConfig(optimizer="adam", restarts=0)), "restarts must be >= 1"),
            (dict(config=TrainConfig(optimizer="adam", learning_rate=0.0)), "learning_rate must be > 0"),
            (dict(config=TrainConfig(optimizer="rmsprop")), "unknown optimizer 'rmsprop'"),
            (dict(config=TrainConfig(optimizer="adam", penalty="l0")), "unknown penalty 'l0'"),
            (dict(config=TrainConfig(optimizer="adam", schedule="step")), "unknown schedule 'step'"),
            (dict(config=TrainConfig(optimizer="adam", schedule="cosine", lr_decay=0.0)), r"lr_decay\) must be"),
            (dict(config=TrainConfig(optimizer="adam", representation="csr")), "unknown representation"),
            (dict(config=TrainConfig(optimizer="sgd", representation="dense")), "sparse"),
            (dict(config=TrainConfig(optimizer="sgd", steps_per_epoch=2)), "one pass"),
            (dict(config=TrainConfig(optimizer="adam", loss="nope.nope:fn")), "cannot import module"),
            (dict(patience=0), "patience must be >= 1"),
            (dict(valid=Triplets(np.array([99], np.int32), np.array([0], np.int32),
                                 np.array([3.0], np.float32))), "valid: user index"),
        ],
    )
    def test_input_validation(self, small_data, kwargs, message):
        args = dict(train=small_data[0], **SMALL) | kwargs
        with pytest.raises(ValueError, match=message):
            fit(args.pop("train"), **args)


class TestFitSettings:
    def test_custom_loss_by_import_path_trains(self, small_data):
        history = small_fit(small_data, epochs=15, loss=CUSTOM).history
        assert history[-1]["valid_rmse"] < 0.9 * history[0]["valid_rmse"]
        with pytest.raises(InvalidLossError, match="returned shape"):
            small_fit(small_data, loss="tests.custom_losses:reduced")

    def test_huber_trains(self, small_data):
        history = small_fit(small_data, epochs=15, loss="huber").history
        assert history[-1]["valid_rmse"] < 0.9 * history[0]["valid_rmse"]

    def test_without_biases_only_factors_move(self, small_data):
        params = small_fit(small_data, biases=False).params
        assert float(params.mean) == 0.0
        assert not np.any(np.asarray(params.user_bias)) and not np.any(np.asarray(params.item_bias))
        users, items = small_data[1].users, small_data[1].items
        pu, qi = np.asarray(params.user_factors), np.asarray(params.item_factors)
        dots = np.sum(pu[users] * qi[items], 1)
        np.testing.assert_allclose(np.asarray(predict(params, users, items)), dots, rtol=1e-6)

    @pytest.mark.parametrize("optimizer, learning_rate", [("adam", 0.05), ("sgd", 0.5)])
    def test_nonneg_projection_with_l1_gives_exact_zeros(self, small_data, optimizer,
                                                          learning_rate):
        """L1's constant pull sets small factors to exactly 0 where L2 only shrinks
        them, so with the projection L1 leaves more exact zeros than L2 (sparse codes)."""
        runs = {penalty: small_fit(small_data, nonneg=True, penalty=penalty, reg=0.01,
                                   optimizer=optimizer, learning_rate=learning_rate, epochs=8)
                for penalty in ("l1", "l2")}
        zeros = {}
        for penalty, result in runs.items():
            factors = np.concatenate([np.asarray(result.params.user_factors).ravel(),
                                      np.asarray(result.params.item_factors).ravel()])
            assert factors.min() >= 0.0, penalty
            zeros[penalty] = np.mean(factors == 0.0)
        assert zeros["l1"] > zeros["l2"], zeros
        assert runs["l1"].history[-1]["train_loss"] < runs["l1"].history[0]["train_loss"]

    def test_nonneg_l1_factors_still_predict(self, small_data):
        """The sparse factors are not collapsed to zero: they beat the model's own biases."""
        params = small_fit(small_data, nonneg=True, penalty="l1", reg=0.01, epochs=8).params
        valid = small_data[1]
        biases_only = params._replace(user_factors=jnp.zeros_like(params.user_factors))
        full, base = (rmse(np.asarray(predict(p, valid.users, valid.items)), valid.ratings)
                      for p in (params, biases_only))
        assert full < base, (full, base)

    def test_dense_and_sparse_fits_agree(self, small_data):
        runs = [small_fit(small_data, representation=r, optimizer="gd", learning_rate=0.5)
                for r in ("sparse", "dense")]
        for a, b in zip(*(r.params for r in runs)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        assert runs[0].history[-1]["train_loss"] == pytest.approx(
            runs[1].history[-1]["train_loss"], rel=1e-5)


MEDIUM = dict(n_users=400, n_items=300)  # 9,000 train ratings: slotted when sparse


@pytest.fixture(scope="module")
def datasets(small_data):
    return {"small": small_data, "medium": synthetic(n=10_000, **MEDIUM)}


@pytest.mark.parametrize("size, config", [
    ("small", dict(optimizer="adam")),                                 # dense layout
    ("small", dict(optimizer="adam", representation="sparse")),        # COO
    ("medium", dict(optimizer="adam", representation="sparse")),       # slotted
    ("small", dict(optimizer="sgd", batch_size=256)),                  # minibatches
    ("small", dict(optimizer="adam", restarts=2, loss="huber", reg=0.3)),
], ids=["dense", "coo", "slotted", "sgd", "restarts-huber"])
def test_train_rmse_is_the_rmse_of_each_epochs_parameters(datasets, size, config):
    """``train_rmse`` is the RMSE of that epoch's parameters on the training ratings,
    whatever the loss, penalty, layout or restarts (``train_loss`` is the objective)."""
    (train, valid), shape = datasets[size], SMALL if size == "small" else MEDIUM
    scored = {}

    def score(epoch, params):
        scored[epoch] = rmse(np.asarray(predict(params, train.users, train.items)), train.ratings)

    result = fit(train, valid=valid, config=TrainConfig(**{"rank": 4, "epochs": 4, **config}),
                 on_epoch=score, **shape)
    recorded = [h["train_rmse"] for h in result.history]
    np.testing.assert_allclose(recorded, [scored[h["epoch"]] for h in result.history], rtol=1e-5)
    assert recorded[-1] < recorded[0]
    if config.get("reg"):  # the objective carries the penalty: its root is no RMSE
        assert abs(np.sqrt(result.history[-1]["train_loss"]) - recorded[-1]) > 1e-3
