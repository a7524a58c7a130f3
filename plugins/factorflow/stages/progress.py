"""Progress lines a person can follow during a long stage: done / total, rate, ETA.

A stage calls :meth:`Progress.update` as often as it likes; a line is logged at
most every ``every`` seconds (and once at the end), so a tight loop costs one
clock read per call and the log stays readable.
"""

from __future__ import annotations

import time
from typing import Callable


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``: short and unambiguous."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


class Progress:
    """Throttled progress of one stage.

    Args:
        what: the stage and its unit, e.g. ``"validate: rows"``.
        total: how many units the stage will process.
        log: where lines go (e.g. an operator's ``log.info`` or ``print``).
        every: seconds between lines; 10 by default.
        clock: seconds since an arbitrary origin (tests pass their own).
    """

    def __init__(self, what: str, total: int, log: Callable[[str], None], *,
                 every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.log, self.every, self.clock = what, total, log, every, clock
        self.started = self.last = clock()
        self.done = 0

    def line(self) -> str:
        """``"validate: rows 5,000,000 / 25,000,000 (20.0%), 1.2M/s, ETA 17 s"``."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.1f}%)" if self.total else ""
        if self.done >= self.total:
            return f"{self.what} {self.done:,} / {self.total:,}{share} in {_duration(elapsed)}"
        eta = _duration((self.total - self.done) / rate) if rate > 0 else "unknown"
        speed = f"{rate / 1e6:.2f}M/s" if rate >= 1e5 else f"{rate:,.0f}/s"
        return f"{self.what} {self.done:,} / {self.total:,}{share}, {speed}, ETA {eta}"

    def update(self, done: int) -> None:
        """``done`` units finished so far; logs when ``every`` seconds passed or at the end."""
        self.done = done
        now = self.clock()
        if done >= self.total or now - self.last >= self.every:
            self.last = now
            self.log(self.line())
