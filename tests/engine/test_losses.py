"""Per-element losses, penalties, registries and user-defined losses against NumPy."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow import choices
from factorflow.engine.losses import (
    LOSSES,
    REGULARIZERS,
    InvalidLossError,
    absolute_error,
    get_loss,
    get_penalty,
    huber,
    l1_penalty,
    l2_penalty,
    masked_squared_error,
    resolve_loss,
    squared_error,
)
from tests import custom_losses
from tests.helpers import jit_twice

pytestmark = pytest.mark.unit

PRED = np.array([1.0, 2.5, -1.0, 4.0], np.float32)
TARGET = np.array([1.5, 2.5, 1.0, 3.0], np.float32)
CUSTOM = "tests.custom_losses"


class TestSquaredError:
    def test_matches_numpy_under_jit(self):
        got = jit_twice(squared_error, PRED, TARGET)
        np.testing.assert_allclose(np.asarray(got), [0.25, 0.0, 4.0, 1.0])
        assert got.shape == (4,) and got.dtype == np.float32

    def test_refuses_broadcasting(self):
        with pytest.raises(ValueError, match=r"pred \(4,\).*target \(4, 1\)"):
            squared_error(PRED, TARGET[:, None])


class TestAbsoluteError:
    def test_matches_numpy_under_jit(self):
        got = jit_twice(absolute_error, PRED, TARGET)
        np.testing.assert_allclose(np.asarray(got), [0.5, 0.0, 2.0, 1.0])

    def test_gradient_is_sign_and_zero_at_a_tie(self):
        grad = jax.jit(jax.grad(lambda p: jnp.sum(absolute_error(p, TARGET))))(PRED)
        np.testing.assert_array_equal(np.asarray(grad), [-1.0, 0.0, -1.0, 1.0])

    def test_shape_check(self):
        with pytest.raises(ValueError, match=r"target \(3,\)"):
            absolute_error(PRED, TARGET[:3])


class TestHuber:
    def test_quadratic_inside_linear_outside(self):
        # residuals -0.5, 0, -2, 1 with delta 1: 0.125, 0, 1 * (2 - 0.5), 0.5
        got = jit_twice(huber, PRED, TARGET)
        np.testing.assert_allclose(np.asarray(got), [0.125, 0.0, 1.5, 0.5], rtol=1e-6)

    def test_delta_and_bounded_gradient(self):
        got = jit_twice(huber, PRED, TARGET, delta=0.25)
        r = np.abs(PRED - TARGET)
        want = np.where(r <= 0.25, 0.5 * r**2, 0.25 * (r - 0.125))
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
        grad = jax.jit(jax.grad(lambda p: jnp.sum(huber(p, TARGET, delta=0.25))))(PRED)
        np.testing.assert_allclose(np.asarray(grad), [-0.25, 0.0, -0.25, 0.25])

    def test_checks(self):
        with pytest.raises(ValueError, match="delta must be > 0"):
            huber(PRED, TARGET, delta=0.0)
        with pytest.raises(ValueError, match=r"pred \(4,\), target \(2, 2\)"):
            huber(PRED, TARGET.reshape(2, 2))


class TestMaskedSquaredError:
    def test_zero_where_unobserved(self):
        pred = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        target = np.array([[0.0, np.nan], [5.0, np.inf]], np.float32)
        mask = np.array([[True, False], [True, False]])
        got = np.asarray(jit_twice(masked_squared_error, pred, target, mask))
        np.testing.assert_array_equal(got, [[1.0, 0.0], [4.0, 0.0]])

    def test_shape_checks(self):
        a = np.zeros((2, 3), np.float32)
        with pytest.raises(ValueError, match=r"mask \(3, 2\)"):
            masked_squared_error(a, a, np.ones((3, 2), bool))


class TestL2Penalty:
    def test_per_element_squares(self):
        a = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
        got = jit_twice(l2_penalty, a)
        np.testing.assert_allclose(np.asarray(got), a**2)
        assert got.shape == (2, 2)


class TestL1Penalty:
    def test_per_element_absolute_values(self):
        a = np.array([[1.0, -2.0], [0.5, 0.0]], np.float32)
        np.testing.assert_allclose(np.asarray(jit_twice(l1_penalty, a)), np.abs(a))

    def test_gradient_is_sign_with_zero_at_zero(self):
        a = np.array([1.0, -2.0, 0.0], np.float32)
        grad = jax.jit(jax.grad(lambda x: jnp.sum(l1_penalty(x))))(a)
        np.testing.assert_array_equal(np.asarray(grad), [1.0, -1.0, 0.0])


class TestRegistries:
    def test_names_match_the_jax_free_registry(self):
        assert tuple(LOSSES) == choices.LOSS_NAMES
        assert tuple(REGULARIZERS) == choices.PENALTY_NAMES
        assert LOSSES["squared"] is squared_error and LOSSES["huber"] is huber
        assert REGULARIZERS["l1"] is l1_penalty

    def test_name_registry_imports_no_jax(self):
        code = "import sys, factorflow.choices; assert 'jax' not in sys.modules, 'jax imported'"
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})

    def test_lookups(self):
        assert get_loss("absolute") is absolute_error
        assert get_penalty("l2") is l2_penalty
        with pytest.raises(ValueError, match="unknown loss 'hinge'"):
            get_loss("hinge")
        with pytest.raises(ValueError, match="unknown penalty 'l0'"):
            get_penalty("l0")


class TestResolveLoss:
    def test_registry_names_and_callables(self):
        assert resolve_loss("huber") is huber
        assert resolve_loss(squared_error) is squared_error

    def test_import_path(self):
        fn = resolve_loss(f"{CUSTOM}:weighted_squared")
        assert fn is custom_losses.weighted_squared
        target = np.array([1.5, 4.0, 1.0, 5.0], np.float32)  # two high ratings count twice
        got = jit_twice(fn, PRED, target)
        np.testing.assert_allclose(np.asarray(got), [0.25, 2 * 2.25, 4.0, 2 * 1.0])

    def test_validates_once_per_function(self):
        traces = []

        def counting(pred, target):
            traces.append(1)
            return squared_error(pred, target)

        resolve_loss(counting)
        resolve_loss(counting)
        assert len(traces) == 1

    @pytest.mark.parametrize(
        "spec, message",
        [
            ("hinge", r"unknown loss 'hinge'.*package.module:function"),
            ("no_such_module_xyz:fn", r"cannot import module 'no_such_module_xyz'"),
            (f"{CUSTOM}:missing", r"has no attribute 'missing'"),
            (f"{CUSTOM}:NOT_CALLABLE", r"float object is not callable"),
            (f"{CUSTOM}:reduced",
             r"per-element values of pred's shape \(5,\), returned shape \(\)"),
            (f"{CUSTOM}:rounded", r"gradient is zero at every probe point"),
            (f"{CUSTOM}:numpy_inside", r"failed under jax.jit/jax.vjp"),
            (f"{CUSTOM}:", r"must read 'package.module:function'"),
            (42, r"int object is not callable"),
        ],
    )
    def test_clear_errors(self, spec, message):
        with pytest.raises(InvalidLossError, match=message) as info:
            resolve_loss(spec)
        assert isinstance(info.value, ValueError)

    def test_non_finite_gradient(self):
        with pytest.raises(InvalidLossError, match="non-finite"):
            resolve_loss(lambda pred, target: jnp.sqrt(jnp.abs(pred - target) - 0.5))
