"""What a stage used: its wall time and its peak resident memory (RSS).

Tasks may share a process (``dag.test()`` runs every task in one), so a stage's
peak must be its own, not the process's lifetime maximum. On Linux the kernel
keeps the exact high-water mark of a process's RSS (``VmHWM`` in
``/proc/self/status``) and lets the process reset it to the current RSS
(writing ``5`` to ``/proc/self/clear_refs``, Linux >= 4.0): reset when the stage
starts, read when it ends, it is exact, with no sampling gaps. Processes the
stage spawns have marks of their own, so a background thread also sums their RSS
with this process's every ``interval`` seconds. Where the reset is not allowed
(another OS, a locked-down ``/proc``), this process is sampled the same way and
a spike shorter than the interval can be missed.

The reset also lowers ``getrusage(RUSAGE_SELF).ru_maxrss`` of this process: a
caller that reads it around a stage sees the stage's peak, not the process's.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psutil

#: Bytes per MB in the figures (decimal, as the bench's GB).
MB = 1_000_000


def _reset_high_water_mark() -> bool:
    """Ask the kernel to set this process's RSS high-water mark to its current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _high_water_mark() -> int | None:
    """This process's RSS high-water mark in bytes (``VmHWM``), or None where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_limit_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit when lower."""
    limit = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


class ResourceMeter:
    """Wall time and peak RSS of a ``with`` block: this process and the processes it spawns.

    Attributes:
        seconds: wall time of the block (set on exit).
        start_rss_bytes: this process's RSS when the block started.
        peak_rss_bytes: the block's peak RSS: this process's exact high-water
            mark where the kernel allows its reset, and the peak of the sampled
            sum over this process and the processes started during the block.
        exact: whether this process's peak is the kernel's mark (else sampled).

    Example::

        with ResourceMeter() as meter:
            train(...)
        meter.seconds, meter.peak_rss_mb
    """

    def __init__(self, *, interval: float = 0.1) -> None:
        self.interval = interval
        self.seconds = 0.0
        self.start_rss_bytes = self.peak_rss_bytes = 0
        self.exact = False
        self._stop = threading.Event()
        self._inherited: set[tuple[int, float]] = set()
        self._process: Any = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def __enter__(self) -> "ResourceMeter":
        self._process = psutil.Process()
        # children that predate the block (a test's helper, a server) are not the stage's
        self._inherited = {_key(p) for p in self._process.children(recursive=True)}
        reset = _reset_high_water_mark()
        self.start_rss_bytes = self.peak_rss_bytes = self._process.memory_info().rss
        # a kernel that ignored the reset still shows the process's lifetime peak
        mark = _high_water_mark()
        self.exact = reset and mark is not None and mark <= self.start_rss_bytes + 16 * MB
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True,
                                        name="factorflow-resource-meter")
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.seconds = time.perf_counter() - self._started
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.exact:
            self.peak_rss_bytes = max(self.peak_rss_bytes, _high_water_mark() or 0)

    @property
    def peak_rss_mb(self) -> float:
        """The block's peak RSS in MB (10^6 bytes), one decimal."""
        return round(self.peak_rss_bytes / MB, 1)

    def describe(self) -> str:
        """The peak and how it was measured, for a log line."""
        how = ("kernel high-water mark" if self.exact else f"sampled every {self.interval:g} s")
        return (f"peak RSS {self.peak_rss_mb:,.1f} MB ({how}; child processes sampled every "
                f"{self.interval:g} s; {self.start_rss_bytes / MB:,.1f} MB at the start)")

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        try:
            total = self._process.memory_info().rss
            for child in self._process.children(recursive=True):
                try:
                    if _key(child) not in self._inherited:
                        total += child.memory_info().rss
                except psutil.Error:  # it ended between the listing and the read
                    continue
        except psutil.Error:
            return
        self.peak_rss_bytes = max(self.peak_rss_bytes, total)


def _key(process: Any) -> tuple[int, float]:
    """A process's identity across PID reuse: (pid, start time)."""
    try:
        return process.pid, process.create_time()
    except psutil.Error:  # gone already
        return process.pid, 0.0
