"""Per-element losses and penalties against NumPy."""

import jax
import numpy as np
import pytest

from factorflow.losses import (
    LOSSES,
    get_loss,
    l1_penalty,
    l2_penalty,
    masked_squared_error,
    squared_error,
)

pytestmark = pytest.mark.unit

PRED = np.array([1.0, 2.5, -1.0, 4.0], np.float32)
TARGET = np.array([1.5, 2.5, 1.0, 3.0], np.float32)


def test_squared_error_matches_numpy():
    got = squared_error(PRED, TARGET)
    np.testing.assert_allclose(np.asarray(got), [0.25, 0.0, 4.0, 1.0])
    assert got.shape == (4,) and got.dtype == np.float32


def test_squared_error_refuses_broadcasting():
    with pytest.raises(ValueError, match=r"pred \(4,\).*target \(4, 1\)"):
        squared_error(PRED, TARGET[:, None])


def test_masked_squared_error_zero_where_unobserved():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    target = np.array([[0.0, np.nan], [5.0, np.inf]], np.float32)
    mask = np.array([[True, False], [True, False]])
    got = np.asarray(masked_squared_error(pred, target, mask))
    np.testing.assert_array_equal(got, [[1.0, 0.0], [4.0, 0.0]])


def test_masked_squared_error_shape_checks():
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"mask \(3, 2\)"):
        masked_squared_error(a, a, np.ones((3, 2), bool))


def test_penalties_match_numpy():
    a = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
    b = np.array([-3.0], np.float32)
    assert float(l2_penalty(a, b)) == pytest.approx(np.sum(a**2) + np.sum(b**2))
    assert float(l1_penalty(a, b)) == pytest.approx(np.sum(np.abs(a)) + np.sum(np.abs(b)))
    assert float(l2_penalty()) == 0.0


def test_losses_work_under_jit():
    got = jax.jit(squared_error)(PRED, TARGET)
    np.testing.assert_allclose(np.asarray(got), (PRED - TARGET) ** 2)
    masked = jax.jit(masked_squared_error)(PRED, TARGET, PRED > 0)
    np.testing.assert_allclose(np.asarray(masked), np.where(PRED > 0, (PRED - TARGET) ** 2, 0))
    assert float(jax.jit(l2_penalty)(PRED, TARGET)) == pytest.approx(
        np.sum(PRED**2) + np.sum(TARGET**2)
    )


def test_registry():
    assert LOSSES["squared"] is squared_error
    assert get_loss("squared") is squared_error
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")
