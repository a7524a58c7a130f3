"""Training: gradients against hand derivations, and fits on synthetic data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.evaluation import fit_baseline, predict_baseline, rmse
from factorflow.losses import masked_squared_error, squared_error
from factorflow.matrix import Triplets, to_dense
from factorflow.training import (
    FactorParams,
    FitResult,
    TrainConfig,
    TrainingDivergedError,
    fit,
    init_params,
    objective,
    predict,
)

pytestmark = pytest.mark.unit


def synthetic(n_users=400, n_items=300, n=24_000, true_rank=4, noise=0.4, seed=0):
    """Low-rank + biases + noise ratings clipped to [1, 5], split 90/10."""
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


@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(42)
    n_users, n_items, rank = 6, 5, 3
    mask = rng.random((n_users, n_items)) < 0.5
    mask[0, 0] = mask[-1, -1] = True
    ratings = rng.uniform(1.0, 5.0, (n_users, n_items)).astype(np.float32)
    u_mat = rng.normal(size=(n_users, rank)).astype(np.float32)
    v_mat = rng.normal(size=(n_items, rank)).astype(np.float32)
    return ratings, mask, u_mat, v_mat


def half_masked_sse(u_mat, v_mat, ratings, mask):
    return 0.5 * jnp.sum(masked_squared_error(u_mat @ v_mat.T, ratings, mask))


def analytic_grads(ratings, mask, u_mat, v_mat):
    e = np.where(mask, u_mat.astype(np.float64) @ v_mat.T - ratings, 0.0)
    return e @ v_mat, e.T @ u_mat


def test_autodiff_gradient_equals_analytic(small_problem):
    ratings, mask, u_mat, v_mat = small_problem
    grad_u, grad_v = jax.grad(half_masked_sse, argnums=(0, 1))(u_mat, v_mat, ratings, mask)
    want_u, want_v = analytic_grads(ratings, mask, u_mat, v_mat)
    np.testing.assert_allclose(np.asarray(grad_u), want_u, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grad_v), want_v, rtol=1e-5, atol=1e-5)
    # The check has teeth: a dropped mask (unobserved entries treated as 0
    # ratings) gives a clearly different gradient.
    unmasked = (u_mat @ v_mat.T - np.where(mask, ratings, 0.0)) @ v_mat
    assert np.abs(unmasked - want_u).max() > 1e-1


def test_gradient_matches_central_differences(small_problem):
    ratings, mask, u_mat, v_mat = small_problem
    with jax.enable_x64(True):
        u64, v64 = u_mat.astype(np.float64), v_mat.astype(np.float64)
        r64 = ratings.astype(np.float64)
        grads = jax.grad(half_masked_sse, argnums=(0, 1))(u64, v64, r64, mask)
        f = jax.jit(half_masked_sse)
        eps = 1e-6
        for which, (arr, grad) in enumerate(zip((u64, v64), grads)):
            fd = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                step = np.zeros_like(arr)
                step[idx] = eps
                args = [u64, v64]
                args[which] = arr + step
                plus = float(f(*args, r64, mask))
                args[which] = arr - step
                minus = float(f(*args, r64, mask))
                fd[idx] = (plus - minus) / (2 * eps)
            assert np.asarray(grad).dtype == np.float64
            np.testing.assert_allclose(np.asarray(grad), fd, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(fd, analytic_grads(r64, mask, u64, v64)[which], atol=1e-6)


def dense_to_params(u_mat, v_mat):
    return FactorParams(
        mean=jnp.zeros((), jnp.float32),
        user_bias=jnp.zeros(u_mat.shape[0], jnp.float32),
        item_bias=jnp.zeros(v_mat.shape[0], jnp.float32),
        user_factors=jnp.asarray(u_mat),
        item_factors=jnp.asarray(v_mat),
    )


def test_coo_objective_equals_dense_masked(small_problem):
    ratings, mask, u_mat, v_mat = small_problem
    users, items = np.nonzero(mask)
    coo = Triplets(users.astype(np.int32), items.astype(np.int32), ratings[users, items])
    values, dense_mask = to_dense(coo, n_users=mask.shape[0], n_items=mask.shape[1])
    params = dense_to_params(u_mat, v_mat)
    got = objective(params, coo.users, coo.items, coo.ratings, reg=0.0)
    dense = 2.0 * half_masked_sse(u_mat, v_mat, values, dense_mask) / mask.sum()
    assert float(got) == pytest.approx(float(dense), rel=1e-6)


def test_coo_objective_gradient_with_per_observation_l2(small_problem):
    ratings, mask, u_mat, v_mat = small_problem
    users, items = np.nonzero(mask)
    n, reg = len(users), 0.3
    grads = jax.grad(objective)(
        dense_to_params(u_mat, v_mat), users, items, ratings[users, items], reg=reg
    )
    e_v, et_u = analytic_grads(ratings, mask, u_mat, v_mat)
    # d/dP of reg * mean(|p_u|^2) is 2 * reg * count_u / n * p_u.
    want_u = 2.0 / n * (e_v + reg * mask.sum(1)[:, None] * u_mat)
    want_v = 2.0 / n * (et_u + reg * mask.sum(0)[:, None] * v_mat)
    np.testing.assert_allclose(np.asarray(grads.user_factors), want_u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(grads.item_factors), want_v, rtol=1e-5, atol=1e-6)
    residual_sum = np.sum(np.where(mask, u_mat @ v_mat.T - ratings, 0.0))
    assert float(grads.mean) == pytest.approx(2.0 / n * residual_sum, rel=1e-5)


@pytest.fixture(scope="module")
def synthetic_fit():
    train, valid = synthetic()
    lines: list[str] = []
    result = fit(train, n_users=400, n_items=300, valid=valid, log=lines.append)
    return train, valid, result, lines


def test_fit_beats_bias_baseline(synthetic_fit):
    train, valid, result, _ = synthetic_fit
    baseline = fit_baseline(train, n_users=400, n_items=300)
    base_rmse = rmse(predict_baseline(baseline, valid.users, valid.items), valid.ratings)
    model_rmse = rmse(np.asarray(predict(result.params, valid.users, valid.items)), valid.ratings)
    assert model_rmse < 0.8 * base_rmse, (model_rmse, base_rmse)
    assert model_rmse == pytest.approx(result.history[result.best_epoch - 1]["valid_rmse"], rel=1e-5)


def test_fit_history_and_log(synthetic_fit):
    _, _, result, lines = synthetic_fit
    assert isinstance(result, FitResult)
    epochs = TrainConfig().epochs
    assert [h["epoch"] for h in result.history] == list(range(1, epochs + 1))
    assert set(result.history[0]) == {"epoch", "seconds", "train_loss", "valid_rmse", "ratings_per_s"}
    assert all(h["ratings_per_s"] > 0 for h in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert len(lines) == epochs and lines[0].startswith(f"epoch 1/{epochs}:")
    assert "valid RMSE" in lines[0] and "ratings/s" in lines[0]
    assert result.params.user_factors.dtype == jnp.float32


def test_fit_is_deterministic():
    train, _ = synthetic(n_users=60, n_items=50, n=1500)
    config = TrainConfig(rank=4, epochs=5)
    a = fit(train, n_users=60, n_items=50, config=config).params
    b = fit(train, n_users=60, n_items=50, config=config).params
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    c = fit(train, n_users=60, n_items=50, config=config._replace(seed=1)).params
    assert not np.array_equal(np.asarray(a.user_factors), np.asarray(c.user_factors))


def test_divergence_names_epoch_and_cause():
    train, _ = synthetic(n_users=60, n_items=50, n=1500)
    config = TrainConfig(rank=4, epochs=50, optimizer="gd", learning_rate=1e6)
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+/50.*learning rate") as info:
        fit(train, n_users=60, n_items=50, config=config)
    assert isinstance(info.value, ValueError)


def test_early_stopping_keeps_best_epoch():
    # Rank 32 without L2 on ~20 ratings per user overfits fast.
    train, valid = synthetic(n_users=100, n_items=80, n=2200, seed=3)
    config = TrainConfig(epochs=200, reg=0.0, learning_rate=0.1)
    result = fit(train, n_users=100, n_items=80, valid=valid, config=config, patience=3)
    rmses = [h["valid_rmse"] for h in result.history]
    assert len(rmses) < 200
    assert result.best_epoch == int(np.argmin(rmses)) + 1
    assert len(rmses) == result.best_epoch + 3
    got = rmse(np.asarray(predict(result.params, valid.users, valid.items)), valid.ratings)
    assert got == pytest.approx(min(rmses), rel=1e-5)
    assert got < rmses[-1]


def test_step_compiles_once():
    traces = []

    def counting_loss(pred, target):
        traces.append(1)  # runs only while JAX traces, not per execution
        return squared_error(pred, target)

    train, valid = synthetic(n_users=60, n_items=50, n=1500)
    config = TrainConfig(rank=4, epochs=6)
    fit(train, n_users=60, n_items=50, valid=valid, config=config, loss=counting_loss)
    assert len(traces) == 1  # six epochs, one trace
    # Rate and reg are traced arguments: a sweep over them reuses the program.
    config = config._replace(learning_rate=0.01, reg=0.5, epochs=2)
    fit(train, n_users=60, n_items=50, valid=valid, config=config, loss=counting_loss)
    assert len(traces) == 1


def test_optimizers_reduce_the_loss():
    train, _ = synthetic(n_users=60, n_items=50, n=1500)
    for optimizer, lr in [("adam", 0.05), ("gd", 0.5), ("normalized_gd", 0.5)]:
        config = TrainConfig(rank=4, epochs=20, optimizer=optimizer, learning_rate=lr)
        history = fit(train, n_users=60, n_items=50, config=config).history
        assert history[-1]["train_loss"] < history[0]["train_loss"], optimizer
        assert history[-1]["valid_rmse"] is None
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        fit(train, n_users=60, n_items=50, config=TrainConfig(optimizer="sgd"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(train=Triplets(*(np.zeros(0, t) for t in (np.int32, np.int32, np.float32)))), "no ratings"),
        (dict(n_users=3), r"user index range \[0, \d+\] outside \[0, 3\)"),
        (dict(n_items=3), r"item index range"),
        (dict(config=TrainConfig(rank=0)), "rank must be >= 1"),
        (dict(config=TrainConfig(epochs=0)), "epochs must be >= 1"),
        (dict(valid=Triplets(np.array([99], np.int32), np.array([0], np.int32),
                             np.array([3.0], np.float32))), "valid: user index"),
    ],
)
def test_input_validation(kwargs, message):
    train, _ = synthetic(n_users=60, n_items=50, n=1500)
    args = dict(train=train, n_users=60, n_items=50) | kwargs
    with pytest.raises(ValueError, match=message):
        fit(args.pop("train"), **args)


def test_init_params_shapes():
    params = init_params(jax.random.key(0), n_users=7, n_items=5, rank=3, mean=3.5)
    assert params.user_factors.shape == (7, 3) and params.item_factors.shape == (5, 3)
    assert float(params.mean) == 3.5 and not np.any(np.asarray(params.user_bias))
    assert all(p.dtype == jnp.float32 for p in params)
