"""Fixtures the engine tests share."""

import pytest

from tests.helpers import SMALL, synthetic


@pytest.fixture(scope="module")
def small_data():
    """``(train, valid)`` Triplets: 1,500 ratings of a rank-4 model, ``SMALL``'s shape."""
    return synthetic(n=1500, **SMALL)
