"""Progress lines: throttled to one per interval, with done / total, rate and ETA."""

from __future__ import annotations

import pytest

from factorflow.stages.progress import Progress

pytestmark = pytest.mark.unit


def test_lines_are_throttled_and_say_done_rate_and_eta():
    now = [0.0]
    lines: list[str] = []
    progress = Progress("validate: rows", 1_000_000, lines.append, every=10, clock=lambda: now[0])
    for step in range(1, 10):  # 100,000 rows a second, one update a second
        now[0] = float(step)
        progress.update(step * 100_000)
    assert lines == []  # fewer than 10 s: nothing yet
    now[0] = 10.0
    progress.update(1_000_000 // 2)
    assert lines == ["validate: rows 500,000 / 1,000,000 (50.0%), 50,000/s, ETA 10 s"]
    now[0] = 12.0
    progress.update(1_000_000)  # the end is always logged
    assert lines[-1] == "validate: rows 1,000,000 / 1,000,000 (100.0%) in 12 s"


def test_fast_rates_and_long_etas_read_well():
    now = [0.0]
    lines: list[str] = []
    progress = Progress("score: users", 100_000_000, lines.append, every=1, clock=lambda: now[0])
    now[0] = 10.0
    progress.update(2_000_000)
    assert lines == ["score: users 2,000,000 / 100,000,000 (2.0%), 0.20M/s, ETA 8 min 10 s"]
