"""PostgreSQL targets and their sessions: connecting, one transaction, ``COPY`` in and out.

A target is a ``postgresql://`` URI or a :class:`PostgresTarget` whose
``connect`` returns a DB-API connection (psycopg 3, or psycopg2); the Airflow
glue builds one from a connection id with the Postgres provider's hook.
"""

from __future__ import annotations

import io
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

from factorflow.warehouse.base import WarehouseUnavailableError

URI_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")


class PostgresTarget(NamedTuple):
    """A PostgreSQL warehouse.

    Attributes:
        connect: returns a new DB-API connection (psycopg 3 or psycopg2).
        name: how logs and summaries name it (never with a password).
    """

    connect: Callable[[], Any]
    name: str


def is_postgres(target: Any) -> bool:
    """Whether ``target`` names a PostgreSQL warehouse (URI or PostgresTarget)."""
    return isinstance(target, PostgresTarget) or (
        isinstance(target, str) and target.startswith(URI_PREFIXES))


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", uri)


def as_target(target: Any) -> PostgresTarget:
    """A PostgresTarget for a URI (connecting with psycopg 3) or the target itself."""
    if isinstance(target, PostgresTarget):
        return target
    uri = re.sub(r"^postgresql\+psycopg2?://", "postgresql://", str(target))

    def connect() -> Any:
        import psycopg

        return psycopg.connect(uri, connect_timeout=10)

    return PostgresTarget(connect, redact(uri))


@contextmanager
def transaction(target: Any) -> Iterator[Any]:
    """A cursor in one transaction: committed on success, rolled back on any error.

    Raises:
        WarehouseUnavailableError: the server cannot be reached (one readable line).
    """
    target = as_target(target)
    try:
        con = target.connect()
    except Exception as exc:  # psycopg.OperationalError, psycopg2.OperationalError, ...
        if type(exc).__name__ != "OperationalError":
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WarehouseUnavailableError(
            f"cannot connect to the PostgreSQL warehouse {target.name}: {first}") from exc
    try:
        con.autocommit = False
        with con.cursor() as cur:
            yield cur
        con.commit()
    except BaseException:
        con.rollback()
        raise
    finally:
        con.close()


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg 3 or psycopg2 error."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def copy_in(cur: Any, sql: str, data: bytes) -> None:
    """``COPY ... FROM STDIN`` with either driver."""
    if hasattr(cur, "copy"):  # psycopg 3
        with cur.copy(sql) as copy:
            copy.write(data)
    else:  # psycopg2
        cur.copy_expert(sql, io.BytesIO(data))


def copy_out(cur: Any, sql: str, path: Path) -> None:
    """``COPY ... TO STDOUT`` into a file, streamed, with either driver."""
    with open(path, "wb") as out:
        if hasattr(cur, "copy"):
            with cur.copy(sql) as copy:
                for chunk in copy:
                    out.write(chunk)
        else:
            cur.copy_expert(sql, out)
