"""ResourceMeter: a block's own wall time and peak RSS, its child processes included."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from factorflow.stages.resources import MB, ResourceMeter, memory_limit_bytes

pytestmark = pytest.mark.unit

#: A child process that holds ``argv[1]`` MB for ``argv[2]`` seconds.
HOLD = ("import sys, time, numpy as np; a = np.ones(int(sys.argv[1]) * 10**6 // 8); "
        "time.sleep(float(sys.argv[2]))")


def _touch(mb: int) -> np.ndarray:
    """``mb`` MB of resident memory (ones, so every page is written)."""
    return np.ones(mb * MB // 8)


def test_the_peak_is_the_blocks_own_not_the_processs_lifetime_maximum():
    with ResourceMeter() as big:
        block = _touch(400)
        del block
    with ResourceMeter() as small:
        block = _touch(50)
        del block
    assert big.peak_rss_mb > big.start_rss_bytes / MB + 350
    # the second block's peak: where it started plus its own 50 MB, not the first block's 400
    assert small.start_rss_bytes / MB + 40 < small.peak_rss_mb < big.peak_rss_mb - 250
    assert big.seconds > 0 and small.seconds > 0


def test_a_short_spike_is_caught_exactly_where_the_kernel_allows_it():
    with ResourceMeter(interval=10.0) as meter:  # no sample lands inside the spike
        block = _touch(300)
        del block
    if not meter.exact:
        pytest.skip("this kernel does not let a process reset its RSS high-water mark")
    assert meter.peak_rss_mb > meter.start_rss_bytes / MB + 280
    assert "kernel high-water mark" in meter.describe()


def test_child_processes_started_in_the_block_count_and_earlier_ones_do_not():
    earlier = subprocess.Popen([sys.executable, "-c", HOLD, "300", "30"])
    try:
        time.sleep(1.0)  # let it allocate
        with ResourceMeter(interval=0.05) as meter:
            subprocess.run([sys.executable, "-c", HOLD, "200", "1.0"], check=True)
    finally:
        earlier.kill()
        earlier.wait()
    own = meter.peak_rss_mb - meter.start_rss_bytes / MB
    assert 180 < own < 450, meter.describe()  # the child's 200 MB (and its interpreter), not 500


def test_the_memory_limit_is_positive_and_at_most_the_machines():
    import psutil

    assert 0 < memory_limit_bytes() <= psutil.virtual_memory().total
