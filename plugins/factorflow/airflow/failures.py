"""Which task failures Airflow retries: only those another try can fix.

A stage that fails deterministically (bad data, a setting the engine refuses, a
diverging loss, a truncated or garbage artifact from the task before, a warehouse
file that is not a database DuckDB can open) or runs out of memory fails the same
way with the same inputs,
so retrying only delays the report; such a failure becomes an
``AirflowFailException`` (no retries) whose message says what was wrong and,
for memory, what to change. Lock timeouts and lost connections may clear, so
they, and anything unrecognised, keep Airflow's retries. So does a full disk
(``ENOSPC``/``EDQUOT``, on the artifacts' or the warehouse's file system): space
is often freed within the retry delay (a cleanup job, another run's artifacts
removed, an operator), and a failed try leaves nothing behind, so another try is
cheap; the stages raise it as ``DiskFullError``, naming the path, the space that
was free and what to do, so that each failed try already says how to fix it.

Classes are matched by name, so that neither DuckDB, psycopg nor JAX is
imported to look at an exception.
"""

from __future__ import annotations

from typing import Any

#: (top-level module, class name) of errors another try may not meet: a held
#: DuckDB file (IOException: "Could not set lock"), a PostgreSQL server that
#: refused, dropped or timed out the connection, our own lock timeout.
TRANSIENT = {("_duckdb", "IOException"), ("duckdb", "IOException"),
             ("psycopg", "OperationalError"), ("psycopg2", "OperationalError"),
             ("factorflow", "WarehouseLockedError")}
#: Class names of out-of-memory errors: the engine's, DuckDB's, PyTorch's.
OUT_OF_MEMORY = {"OutOfMemoryError", "OutOfMemoryException"}


def _names(exc: BaseException) -> set[tuple[str, str]]:
    return {(c.__module__.split(".")[0], c.__name__) for c in type(exc).__mro__}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during, outermost first."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def classify(exc: BaseException) -> str:
    """``"disk"``, ``"transient"``, ``"memory"``, ``"deterministic"`` or ``"unknown"``.

    disk: a full disk or quota anywhere in the chain (``DiskFullError``, an
    ``OSError`` with ``ENOSPC``/``EDQUOT``, DuckDB's or Polars' "No space left
    on device", psycopg's ``DiskFull``), retried like a transient failure.
    transient: ``OSError`` (connection refused or reset, timeouts), DuckDB's
    IOException (a locked file), psycopg's OperationalError,
    ``WarehouseLockedError``. memory: ``MemoryError``, a class named
    OutOfMemoryError/OutOfMemoryException, or XLA's ``RESOURCE_EXHAUSTED``,
    anywhere in the chain. deterministic: ``ValueError`` and its subclasses
    (``RatingsValidationError``, ``TrainingDivergedError``, refused settings,
    ``ArtifactError``: a damaged file between tasks, whose message names the task
    to clear; ``WarehouseFileError``: the warehouse path is not a DuckDB database
    this DuckDB opens), even when raised from a DuckDB ``IOException``.
    """
    from factorflow.engine.artifacts import disk_full

    if disk_full(exc):
        return "disk"
    if isinstance(exc, OSError) or _names(exc) & TRANSIENT:
        return "transient"
    for link in _chain(exc):
        if (isinstance(link, MemoryError) or {n for _, n in _names(link)} & OUT_OF_MEMORY
                or "RESOURCE_EXHAUSTED" in str(link)):
            return "memory"
    if isinstance(exc, ValueError):
        return "deterministic"
    return "unknown"


def _what_ran_out(exc: BaseException) -> str:
    for link in _chain(exc):
        if "RESOURCE_EXHAUSTED" in str(link):
            return "device memory (XLA RESOURCE_EXHAUSTED: the accelerator's, or the host's on CPU)"
        if isinstance(link, MemoryError):
            return "host memory (RAM)"
    return f"memory ({type(exc).__name__})"


def memory_message(exc: BaseException, *, stage: str, meter: Any = None,
                   rank: Any = None) -> str:
    """What ran out, how much the stage held, and what to change.

    The engine's ``factorflow.engine.memory.OutOfMemoryError`` already names the step
    that ran out and what to change; its message is kept as it is.
    """
    from factorflow.stages.resources import MB, memory_limit_bytes

    held = ""
    if meter is not None:
        held = (f" Peak RSS of this task: {meter.peak_rss_mb:,.1f} MB of the "
                f"{memory_limit_bytes() / MB:,.0f} MB this worker may use.")
    text = str(exc).strip().rstrip(".")
    repeat = " The same inputs and settings run out again, so it is not retried."
    if ("factorflow", "OutOfMemoryError") in _names(exc):
        return f"{stage or 'the task'}: {text}.{held}{repeat}"
    rank_now = f" (now {rank})" if rank is not None else ""
    return (f"{stage or 'the task'} ran out of {_what_ran_out(exc)}: {text}.{held}{repeat} "
            f"To fit, lower rank{rank_now}, use a smaller working set (chunk size), or run the "
            "task on a worker (or GPU) with more memory.")


def no_retry(exc: BaseException, *, stage: str = "", meter: Any = None,
             rank: Any = None) -> Exception | None:
    """The ``AirflowFailException`` for a failure another try cannot fix, else None.

    None (Airflow's retries apply) for ``"transient"``, ``"disk"`` and
    ``"unknown"`` failures.

    Args:
        exc: what the stage raised.
        stage: the stage's name, for the message.
        meter: the stage's :class:`~factorflow.stages.resources.ResourceMeter`, for its peak.
        rank: the model's rank, named in the out-of-memory advice.
    """
    from airflow.sdk.exceptions import AirflowFailException

    kind = classify(exc)
    if kind == "memory":
        return AirflowFailException(memory_message(exc, stage=stage, meter=meter, rank=rank))
    if kind == "deterministic":
        return AirflowFailException(str(exc))
    return None
