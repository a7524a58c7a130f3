"""The objective: the same value and gradients on the sparse (COO) and dense (masked) layouts."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine.losses import LOSSES, REGULARIZERS, l1_penalty, resolve_loss
from factorflow.engine.gradient.layouts import DenseRatings, SparseRatings, to_device
from factorflow.engine.gradient.objective import dense_objective, objective, sparse_objective
from tests.helpers import half_observed, jit_twice

pytestmark = pytest.mark.unit

N_USERS, N_ITEMS, RANK = 6, 5, 3
CUSTOM = "tests.custom_losses:weighted_squared"


@pytest.fixture(scope="module")
def tiny():
    """Half-observed 6 x 5 ratings (COO and dense) and random parameters."""
    return half_observed(N_USERS, N_ITEMS, RANK)


def numpy_objective(params, values, mask, reg, weight=None, biases=True, l1=False):
    """The objective by hand: mean (weighted) squared error + per-rating penalty."""
    p = [np.asarray(a, np.float64) for a in params]
    mean, bu, bi, pu, qi = p if biases else (0.0, 0 * p[1], 0 * p[2], p[3], p[4])
    pen = np.abs if l1 else np.square
    err = mean + bu[:, None] + bi[None, :] + pu @ qi.T - values
    w = np.ones_like(values) if weight is None else weight
    data = np.sum(np.where(mask, w * err**2, 0.0))
    charge = mask.sum(1) @ (pen(pu).sum(1) + pen(bu)) + mask.sum(0) @ (pen(qi).sum(1) + pen(bi))
    return (data + reg * charge) / mask.sum()


class TestSparseObjective:
    @pytest.mark.parametrize("biases", [True, False])
    def test_matches_numpy(self, tiny, biases):
        coo, values, mask, params = tiny
        got = jit_twice(sparse_objective, params, *coo, reg=0.3, biases=biases)
        want = numpy_objective(params, values, mask, 0.3, biases=biases)
        assert float(got) == pytest.approx(want, rel=1e-5)

    def test_l1_penalty_and_weights(self, tiny):
        coo, values, mask, params = tiny
        got = jit_twice(sparse_objective, params, *coo, reg=0.2, penalty=l1_penalty)
        assert float(got) == pytest.approx(numpy_objective(params, values, mask, 0.2, l1=True),
                                           rel=1e-5)
        # Weight 0 on the second half is the objective of the first half.
        half = len(coo) // 2
        w = np.r_[np.ones(half), np.zeros(len(coo) - half)].astype(np.float32)
        fn = jax.jit(partial(sparse_objective, reg=0.2))
        weighted = fn(params, *coo, weights=w)
        first = fn(params, *(a[:half] for a in coo))
        assert float(weighted) == pytest.approx(float(first), rel=1e-6)

    def test_gradient_matches_analytic(self, tiny):
        coo, values, mask, params = tiny
        n, reg = len(coo), 0.3
        grads = jax.jit(jax.grad(sparse_objective), static_argnames=())(params, *coo, reg=reg)
        p = [np.asarray(a, np.float64) for a in params]
        e = np.where(mask, p[0] + p[1][:, None] + p[2][None, :] + p[3] @ p[4].T - values, 0.0)
        # d/dP of the data term is 2/n E Q; of reg * mean(|p_u|^2) is 2 reg count_u / n p_u.
        want_u = 2.0 / n * (e @ p[4] + reg * mask.sum(1)[:, None] * p[3])
        want_bi = 2.0 / n * (e.sum(0) + reg * mask.sum(0) * p[2])
        np.testing.assert_allclose(np.asarray(grads.user_factors), want_u, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(grads.item_bias), want_bi, rtol=1e-5, atol=1e-6)
        assert float(grads.mean) == pytest.approx(2.0 / n * e.sum(), rel=1e-5)

    def test_custom_loss_gradient_is_the_weighted_form(self, tiny):
        coo, values, mask, params = tiny
        loss = resolve_loss(CUSTOM)
        grads = jax.jit(jax.grad(sparse_objective), static_argnames=("loss",))(
            params, *coo, reg=0.0, loss=loss)
        p = [np.asarray(a, np.float64) for a in params]
        w = np.where(values >= 4.0, 2.0, 1.0)
        e = np.where(mask, w * (p[0] + p[1][:, None] + p[2][None, :] + p[3] @ p[4].T - values), 0)
        n = mask.sum()
        np.testing.assert_allclose(np.asarray(grads.user_factors), 2 / n * e @ p[4], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(np.asarray(grads.item_factors), 2 / n * e.T @ p[3], rtol=1e-5,
                                   atol=1e-6)
        value = jax.jit(partial(sparse_objective, reg=0.0, loss=loss))(params, *coo)
        assert float(value) == pytest.approx(numpy_objective(params, values, mask, 0.0, weight=w),
                                             rel=1e-5)

    def test_counted_penalty_equals_per_rating_and_excludes_weights(self, tiny):
        coo, values, mask, params = tiny
        counts = dict(user_counts=mask.sum(1).astype(np.float32),
                      item_counts=mask.sum(0).astype(np.float32))
        got = jit_twice(sparse_objective, params, *coo, reg=0.3, penalty=l1_penalty, **counts)
        assert float(got) == pytest.approx(numpy_objective(params, values, mask, 0.3, l1=True),
                                           rel=1e-5)
        with pytest.raises(ValueError, match="weights and counts exclude each other"):
            sparse_objective(params, *coo, reg=0.3, weights=np.ones(len(coo), np.float32),
                             **counts)

    def test_shape_check(self, tiny):
        coo, _, _, params = tiny
        with pytest.raises(ValueError, match=r"ratings \(3,\) must have one shape"):
            sparse_objective(params, coo.users, coo.items, coo.ratings[:3], reg=0.1)


class TestDenseObjective:
    @pytest.mark.parametrize(
        "loss_name, penalty_name, biases",
        [(name, "l2", True) for name in [*LOSSES, CUSTOM]]
        + [("squared", "l1", True), (CUSTOM, "l1", False)],
    )
    def test_same_value_and_gradients_as_sparse(self, tiny, loss_name, penalty_name, biases):
        coo, values, mask, params = tiny
        settings = dict(reg=0.25, loss=resolve_loss(loss_name),
                        penalty=REGULARIZERS[penalty_name], biases=biases)

        def value_and_grads(p, data):
            return jax.value_and_grad(objective)(p, data, **settings)

        # The sparse layout fit uses (count-weighted penalty) is the reference;
        # the dense layout, and once the per-rating penalty of minibatches, agree.
        counted = to_device(coo, n_users=N_USERS, n_items=N_ITEMS, representation="sparse")
        dense = DenseRatings(jnp.asarray(values), jnp.asarray(mask))
        plain = SparseRatings(*(jnp.asarray(a) for a in coo))
        want, want_grads = jax.jit(value_and_grads)(params, counted)
        first_case = (loss_name, penalty_name, biases) == ("squared", "l2", True)
        for data in (dense, plain) if first_case else (dense,):
            got, got_grads = jit_twice(value_and_grads, params, data)
            assert float(got) == pytest.approx(float(want), rel=1e-5)
            for name, a, b in zip(params._fields, got_grads, want_grads):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6,
                                           err_msg=f"{type(data).__name__} {name}")
        if not biases:
            assert not any(np.any(np.asarray(g)) for g in got_grads[:3])

    def test_garbage_in_unobserved_cells_does_not_leak(self, tiny):
        _, values, mask, params = tiny
        dirty = np.where(mask, values, np.nan).astype(np.float32)
        fn = jax.jit(jax.value_and_grad(partial(dense_objective, reg=0.1, loss=LOSSES["huber"])))
        value, grads = fn(params, dirty, mask)
        clean, _ = fn(params, values, mask)
        assert float(value) == pytest.approx(float(clean), rel=1e-6)
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)

    def test_shape_check(self, tiny):
        _, values, mask, params = tiny
        with pytest.raises(ValueError, match=r"values \(5, 6\).*must be \(6, 5\)"):
            dense_objective(params, values.T, mask, reg=0.1)

