"""Shared plumbing of the bench: child processes that print JSON, the machine, versions.

Every measured stage runs in a child process that prints one JSON object on
stdout (its progress goes to a log file under ``.bench/logs``). The parent
reaps it with ``os.wait4``, which gives that child's own peak RSS, and can stop
it on a time limit or an RSS cap; a failed stage becomes a record with an
``error`` instead of an exception, so one failure never ends the whole bench.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = ROOT / ".bench"
GB = 1e9


def run_json(
    cmd: Sequence[str],
    *,
    log: Path,
    timeout: float,
    max_rss_bytes: float | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` from the repository root and return the JSON object it printed.

    Args:
        cmd: the command; it must print one JSON object on stdout (the last
            line that parses is taken).
        log: file that receives the child's stderr.
        timeout: seconds before the child's process group is killed.
        max_rss_bytes: kill the child when its resident set grows past this.
        env: extra environment variables.

    Returns:
        ``{"result": <the JSON object or None>, "wall_seconds", "peak_rss_bytes"
        (the child's ru_maxrss), "returncode", "error" (None when all went
        well), "log"}``.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    killed_for = None
    with tempfile.TemporaryFile("w+") as out, log.open("w") as err:
        proc = subprocess.Popen(list(cmd), cwd=ROOT, stdout=out, stderr=err,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                killed_for = f"timed out after {timeout:.0f} s"
            elif max_rss_bytes and _rss_bytes(proc.pid) > max_rss_bytes:
                killed_for = f"killed: RSS above the {max_rss_bytes / GB:.1f} GB cap"
            if killed_for:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own group (Spark's JVM too)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.1)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    record: dict[str, Any] = {
        "result": _last_json(stdout), "wall_seconds": time.perf_counter() - started,
        "peak_rss_bytes": usage.ru_maxrss * 1024, "returncode": proc.returncode,
        "error": killed_for, "log": str(log),
    }
    if record["error"] is None and (proc.returncode != 0 or record["result"] is None):
        if proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}"
            if -proc.returncode == signal.SIGKILL:
                why += " (out of memory?)"
        else:
            why = f"exit code {proc.returncode}" if proc.returncode else "no JSON on stdout"
        record["error"] = f"{why}: {_tail(log)}"
    return record


def _rss_bytes(pid: int) -> int:
    """Current resident set of ``pid`` (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _last_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:]) or "(empty log)"


def self_peak_rss_bytes() -> int:
    """Peak resident set (VmHWM) of the calling process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """The machine the figures come from: CPUs, memory, load when the bench started."""
    cpu = "unknown"
    mem_total = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "cpu_model": cpu,
        "mem_total_bytes": mem_total, "loadavg": list(os.getloadavg()),
        "platform": platform.platform(), "python": platform.python_version(),
    }


def versions(*names: str) -> dict[str, str | None]:
    """Installed versions of ``names`` in this interpreter (None when absent)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def java_version() -> str | None:
    """The version ``java -version`` reports (its first line if unparsable), or None without Java."""
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (out.stderr or out.stdout).strip().splitlines()
    if not lines:
        return None
    quoted = lines[0].split('"')
    return quoted[1] if len(quoted) >= 3 else lines[0]
