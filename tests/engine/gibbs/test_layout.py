"""The Gibbs layout's padded sizes: few distinct shapes, at most 1/8 padding."""

import pytest

from factorflow.engine.gibbs.layout import bucket


@pytest.mark.unit
def test_buckets_pad_at_most_an_eighth_in_few_sizes():
    sizes = [bucket(n) for n in range(1, 5000)]
    assert all(b >= n and b <= max(32, n * 1.125) for n, b in zip(range(1, 5000), sizes))
    assert len(set(sizes)) < 60 and sizes == sorted(sizes)
