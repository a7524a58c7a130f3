"""The working-set budget's chunk sizes, and out-of-memory errors that say what to change."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine.memory import (
    WORKING_SET_BYTES,
    OutOfMemoryError,
    memory_guard,
    out_of_memory,
    ratings_per_chunk,
    spans,
    users_per_batch,
)

pytestmark = pytest.mark.unit


def _is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


class TestChunkSizes:
    @pytest.mark.parametrize("width", [1, 8, 10, 30, 140, 4096])
    def test_ratings_per_chunk_fits_the_budget(self, width):
        n = ratings_per_chunk(width)
        # three float32 rows of the width and three scalars per rating
        per_rating = 4 * (3 * width + 3)
        assert _is_pow2(n) and n * per_rating <= WORKING_SET_BYTES < 2 * n * per_rating
        assert ratings_per_chunk(140) == 32768  # the uncompressed 14-sample Gibbs model

    @pytest.mark.parametrize("n_items", [1, 1682, 59_000, 10_000_000])
    def test_users_per_batch_fits_the_budget_for_any_item_count(self, n_items):
        b = users_per_batch(n_items, 30)
        assert _is_pow2(b)
        assert b == 1 or b * (14 * n_items + 4 * 30) <= WORKING_SET_BYTES
        assert users_per_batch(n_items, 30, budget=WORKING_SET_BYTES // 4) <= b

    def test_spans_cover_the_range_with_a_ragged_tail(self):
        assert list(spans(10, 4)) == [(0, 4), (4, 8), (8, 10)]
        assert list(spans(0, 4)) == []
        with pytest.raises(ValueError, match="chunk size must be >= 1"):
            list(spans(3, 0))


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001: the test keeps whatever was raised
        return exc
    raise AssertionError("nothing was raised")


class TestOutOfMemory:
    """Real allocation failures: XLA's and NumPy's, not mocks."""

    def test_xla_resource_exhausted_names_the_step_size_and_fix(self):
        exc = _raised(lambda: jnp.zeros((1 << 40,), jnp.float32).block_until_ready())
        assert isinstance(exc, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(exc)
        error = out_of_memory("scoring the train split", exc)
        assert isinstance(error, OutOfMemoryError) and isinstance(error, RuntimeError)
        assert error.step == "scoring the train split" and error.requested == 1 << 42
        message = str(error)
        assert message.startswith("out of memory while scoring the train split "
                                  "(an allocation of 4096.0 GiB)")
        for advice in ("lower the rank", "WORKING_SET_BYTES", "more memory"):
            assert advice in message

    def test_numpy_memory_error_and_the_guard(self):
        with pytest.raises(OutOfMemoryError, match="while fitting the model.*Unable to allocate") \
                as caught:
            with memory_guard("fitting the model"):
                np.zeros((1 << 50,), np.float32)
        assert isinstance(caught.value.__cause__, MemoryError) and caught.value.requested is None

    def test_other_errors_pass_through_unchanged(self):
        assert out_of_memory("x", ValueError("RESOURCE_EXHAUSTED in a message")) is None
        with pytest.raises(RuntimeError, match="^not memory$"):
            with memory_guard("x"):
                raise RuntimeError("not memory")
        inner = OutOfMemoryError("already typed", step="inner")
        with pytest.raises(OutOfMemoryError) as caught:
            with memory_guard("outer"):
                raise inner
        assert caught.value is inner


def test_the_budget_is_read_at_the_call(monkeypatch):
    """Setting WORKING_SET_BYTES (the out-of-memory advice) changes every default chunk."""
    from factorflow.engine import memory

    wide = ratings_per_chunk(140), users_per_batch(59_000, 140)
    monkeypatch.setattr(memory, "WORKING_SET_BYTES", WORKING_SET_BYTES // 8)
    assert (ratings_per_chunk(140), users_per_batch(59_000, 140)) == (wide[0] // 8, wide[1] // 8)
