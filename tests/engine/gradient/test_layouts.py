"""The gradient engine's device layouts: the choice between them, and building each."""

import jax.numpy as jnp
import numpy as np
import pytest

from factorflow.engine.gradient.layouts import (
    DENSE_MAX_CELLS,
    DenseRatings,
    SparseRatings,
    choose_representation,
    to_device,
)
from tests.helpers import half_observed

pytestmark = pytest.mark.unit

N_USERS, N_ITEMS = 6, 5


@pytest.fixture(scope="module")
def tiny():
    """Half-observed 6 x 5 ratings (COO and dense)."""
    return half_observed(N_USERS, N_ITEMS, rank=3)


class TestChooseRepresentation:
    def test_auto_by_size_and_density(self):
        assert choose_representation("auto", n_ratings=5000, n_users=100, n_items=100) == "dense"
        assert choose_representation("auto", n_ratings=100, n_users=100, n_items=100) == "sparse"
        big = DENSE_MAX_CELLS + 1
        assert choose_representation("auto", n_ratings=big, n_users=big, n_items=1) == "sparse"

    def test_override_and_unknown(self):
        assert choose_representation("dense", n_ratings=1, n_users=1000, n_items=1000) == "dense"
        assert choose_representation("sparse", n_ratings=10, n_users=2, n_items=5) == "sparse"
        with pytest.raises(ValueError, match="unknown representation 'csr'"):
            choose_representation("csr", n_ratings=1, n_users=1, n_items=1)


class TestToDevice:
    def test_layouts(self, tiny):
        coo, values, mask, _ = tiny
        sparse = to_device(coo, n_users=N_USERS, n_items=N_ITEMS, representation="sparse")
        assert isinstance(sparse, SparseRatings) and sparse.weights is None
        np.testing.assert_array_equal(np.asarray(sparse.user_counts), mask.sum(1))
        np.testing.assert_array_equal(np.asarray(sparse.item_counts), mask.sum(0))
        assert sparse.users.dtype == jnp.int32 and sparse.ratings.dtype == jnp.float32
        dense = to_device(coo, n_users=N_USERS, n_items=N_ITEMS, representation="dense")
        assert isinstance(dense, DenseRatings)
        np.testing.assert_array_equal(np.asarray(dense.mask), mask)
        np.testing.assert_array_equal(np.asarray(dense.values), values)
        with pytest.raises(ValueError, match="'sparse' or 'dense'"):
            to_device(coo, n_users=N_USERS, n_items=N_ITEMS, representation="auto")
