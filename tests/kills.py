"""Find a real Airflow deployment's task processes and SIGKILL them, for the fault tests.

An Airflow 3 task runs in a process the worker's supervisor forks, titled
``airflow worker -- <task instance id>`` (a new id per try). :class:`TaskWatcher`
follows one DAG run: it records how long each try's process lives and, given a
kill plan, SIGKILLs a task's first try at a random point of its life. After a
kill it waits for Airflow to mark the try failed and then overwrites every file
the killed try wrote under the run's artifact directory with garbage, before
the retry starts: a retry that read anything the killed try left would fail or
publish something else.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RUNNER_TITLE = "airflow worker -- "
#: A kill point: the moment the try first writes a file (see :class:`TaskWatcher`).
ON_FIRST_WRITE = "on its first write"
GARBAGE = b"left by a killed try: must never be read\n"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process ended meanwhile
        return b""


def task_processes() -> dict[str, int]:
    """``{task instance id: pid}`` of every task process on this machine."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        title = _read(f"/proc/{pid}/cmdline").split(b"\0")[0].decode(errors="replace")
        if title.startswith(RUNNER_TITLE):
            found[title[len(RUNNER_TITLE):].strip()] = int(pid)
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, grandchildren, ...), by parent pid in /proc."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        stat = _read(f"/proc/{entry}/stat").decode(errors="replace")
        if stat:  # "pid (comm) state ppid ...": comm may hold spaces, so split after ")"
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def started_at(pid: int) -> float:
    """When process ``pid`` started, as a ``time.time()`` (to the kernel's clock tick)."""
    ticks = int(_read(f"/proc/{pid}/stat").decode().rsplit(")", 1)[1].split()[19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # /proc/stat's btime is whole seconds
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    state = _read(f"/proc/{pid}/stat").decode(errors="replace")
    return bool(state) and state.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Try:
    """One try's process as the watcher saw it."""

    task_id: str
    try_number: int
    pid: int
    started: float  # time.time() when the process started
    ended: float | None = None
    killed_after: float | None = None  # seconds into its life, when it was killed
    written: list[str] = field(default_factory=list)  # what it had written when killed
    poisoned: list[str] = field(default_factory=list)  # files it wrote, overwritten after
    poisoned_at: float | None = None
    retry_seen: float | None = None  # when the next try's process appeared


class TaskWatcher(threading.Thread):
    """Follows the task processes of one DAG run in the metadata DB ``dsn``.

    Args:
        dsn: PostgreSQL URI of the deployment's metadata database.
        run_id: the DAG run to follow.
        run_dir: its artifact directory (``<artifacts>/<dag_id>/<run_id>``).
        kill: ``{task_id: (earliest, latest)}`` seconds from its process start:
            kill each one's first try at a uniformly random point between; or
            ``{task_id: ON_FIRST_WRITE}``: as soon as a file under ``run_dir``
            (or one of ``watch``) is seen modified since the try started.
        seed: for the random points (printed by the test, to replay a failure).
        watch: more files whose writing counts for ON_FIRST_WRITE (a warehouse).
        owns: ``{task_id: path prefixes under run_dir}`` that task writes: tasks
            running side by side (extract and previous_model) then never have
            the other's files counted or overwritten. A task not named owns all.
    """

    def __init__(self, dsn: str, run_id: str, run_dir: Path, *,
                 kill: dict[str, tuple[float, float] | str] | None = None, seed: int = 0,
                 watch: tuple[Path, ...] = (), owns: dict[str, tuple[str, ...]] | None = None):
        super().__init__(daemon=True)
        self.dsn, self.run_id, self.run_dir, self.watch = dsn, run_id, run_dir, watch
        self.owns = owns or {}
        rng = random.Random(seed)
        self.plan = {task: span if span == ON_FIRST_WRITE else rng.uniform(*span)
                     for task, span in (kill or {}).items()}
        self.tries: dict[str, Try] = {}  # by task instance id
        self.errors: list[BaseException] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        if self.errors:
            raise self.errors[0]

    def first_try(self, task_id: str) -> Try | None:
        return next((t for t in self.tries.values()
                     if t.task_id == task_id and t.try_number == 1), None)

    def lifetimes(self) -> dict[str, float]:
        """Seconds each task's first try lived (for tasks seen start and end)."""
        return {t.task_id: t.ended - t.started for t in self.tries.values()
                if t.try_number == 1 and t.ended is not None}

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True) as con:
                while not self._halt.is_set():
                    self._step(con)
                    time.sleep(0.05)
        except BaseException as exc:  # surfaced by stop()
            self.errors.append(exc)

    def _step(self, con) -> None:
        rows = {str(r[0]): r[1:] for r in con.execute(
            "SELECT id, task_id, try_number, state FROM task_instance WHERE run_id = %s",
            (self.run_id,)).fetchall()}
        now = time.time()
        for ti_id, pid in task_processes().items():
            if ti_id in rows and ti_id not in self.tries:
                task_id, try_number, _ = rows[ti_id]
                try:
                    self.tries[ti_id] = Try(task_id, try_number, pid, started_at(pid))
                except (IndexError, ValueError):  # it ended between the two reads
                    continue
                if try_number > 1 and (first := self.first_try(task_id)) is not None:
                    first.retry_seen = self.tries[ti_id].started
        for ti_id, seen in self.tries.items():
            if seen.ended is None and not alive(seen.pid):
                seen.ended = now
            if (seen.try_number == 1 and seen.killed_after is None and seen.ended is None
                    and self._kill_now(seen, now)):
                os.kill(seen.pid, signal.SIGKILL)
                seen.killed_after = now - seen.started
                seen.written = [p.name for p in self._written_since(
                    seen.started, self.watch, scratch=True, task=seen.task_id)]
        for seen in list(self.tries.values()):
            if seen.killed_after is not None and seen.ended is not None and not seen.poisoned:
                if self._marked_failed(con, seen):
                    seen.poisoned = self._poison(seen.started, seen.task_id) or ["(none)"]
                    seen.poisoned_at = time.time()

    def _kill_now(self, seen: Try, now: float) -> bool:
        point = self.plan.get(seen.task_id)
        if point == ON_FIRST_WRITE:
            return bool(self._written_since(seen.started, self.watch, scratch=True,
                                            task=seen.task_id))
        return point is not None and now - seen.started >= point

    def _written_since(self, since: float, also: tuple[Path, ...] = (), *,
                       scratch: bool = False, task: str | None = None) -> list[Path]:
        """Files under the run directory (and ``also``) modified at or after ``since``.

        With ``scratch``, factorflow's scratch directories (``.factorflow-*``)
        count too: their files may live for milliseconds, too short to be seen.
        With ``task``, only the paths it owns (see ``owns``).
        """
        found = []
        prefixes = self.owns.get(task) if task is not None else None
        mine = [p for p in self.run_dir.rglob("*") if prefixes is None
                or str(p.relative_to(self.run_dir)).startswith(prefixes)]
        for path in [*mine, *also]:
            try:
                wanted = path.is_file() or (scratch and path.name.startswith(".factorflow-"))
                if wanted and path.stat().st_mtime >= since:
                    found.append(path)
            except FileNotFoundError:  # renamed or removed meanwhile
                pass
        return found

    def _marked_failed(self, con, seen: Try) -> bool:
        (state,) = con.execute(
            "SELECT state FROM task_instance WHERE run_id = %s AND task_id = %s",
            (self.run_id, seen.task_id)).fetchone()
        return state in ("up_for_retry", "failed", "queued", "scheduled")

    def _poison(self, since: float, task: str) -> list[str]:
        """Overwrite every file of ``task`` under the run directory modified after ``since``."""
        poisoned = []
        for path in self._written_since(since, scratch=True, task=task):
            if path.is_file():
                path.write_bytes(GARBAGE)
            poisoned.append(str(path.relative_to(self.run_dir)) + ("/" if path.is_dir() else ""))
        return poisoned
