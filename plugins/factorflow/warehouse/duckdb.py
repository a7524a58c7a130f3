"""The DuckDB back end: a warehouse in one database file, one writing process at a time.

DuckDB lets one process write a file at a time, so writers wait out another
process's lock (:meth:`DuckDBWarehouse.connect_for_write`) and readers open the
file read-only. Staged Arrow tables are registered on the connection and
inserted without copies. The SQL is ``include/sql/duckdb/``.

A file that is not a DuckDB database this DuckDB can open (a text or Parquet
file given as the warehouse, a file of another storage version) fails with a
:class:`~factorflow.warehouse.base.WarehouseFileError` saying what the file is;
DuckDB refuses it before writing, so it is left as it was.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Iterator, Mapping

from factorflow.paths import read_queries
from factorflow.warehouse.base import (Warehouse, WarehouseFileError, WarehouseLockedError,
                                       run_statements)
from factorflow.warehouse.identifiers import quote_table

log = logging.getLogger(__name__)

#: Leading bytes of files sometimes given as the warehouse by mistake, and what they are.
SIGNATURES = {b"PAR1": "a Parquet file", b"SQLite format 3\x00": "an SQLite database",
              b"PK\x03\x04": "a zip archive (.zip, .npz, .xlsx)", b"\x1f\x8b": "a gzip file",
              b"\x93NUMPY": "a NumPy .npy file", b"ARROW1": "an Arrow IPC file"}
#: DuckDB's IOException messages about the file itself rather than a lock.
NOT_OPENABLE = ("not a valid DuckDB database file", "storage version", "Corrupt database file")


def describe_file(path: Path) -> str:
    """What ``path`` holds, judged from its first bytes: "a Parquet file", "a text file ..."."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "an empty file (0 bytes)"
    if head[8:12] == b"DUCK":
        return "a DuckDB file"
    for magic, what in SIGNATURES.items():
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data of an unknown format ({path.stat().st_size:,} bytes)"
    first = text.strip().splitlines()[0][:40] if text.strip() else ""
    return f"a text file (starting {first!r})"


def connect(path: Path, *, read_only: bool = False) -> Any:
    """``duckdb.connect``, with a file DuckDB cannot open reported in one line.

    Raises:
        WarehouseFileError: ``path`` is not a DuckDB database, is of a storage
            version this DuckDB cannot read, or has a damaged header.
        duckdb.IOException: anything else (another process's lock).
    """
    import duckdb

    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        message = str(exc)
        if not any(sign in message for sign in NOT_OPENABLE) or not path.is_file():
            raise
        what = describe_file(path)
        reason = message.splitlines()[0].removeprefix("IO Error: ")
        if what == "a DuckDB file":
            what = (f"a DuckDB file that DuckDB {duckdb.__version__} cannot open ({reason}): "
                    "open it with the DuckDB that wrote it and EXPORT DATABASE, or")
        else:
            what = f"not a DuckDB database but {what}:"
        raise WarehouseFileError(f"warehouse {path} is {what} point the warehouse at a DuckDB "
                                 "file or a new path; nothing was written to it") from exc


def connect_waiting(path: Path, *, read_only: bool = False, timeout: float = 60.0,
                    first_wait: float = 0.25) -> Any:
    """:func:`connect`, retried while another process holds the file's lock.

    A writer excludes every other process, readers too, so a reader that
    arrives during another DAG's publish waits for its commit as a writer does.
    Retries back off exponentially from ``first_wait`` (to at most 5 s, jittered
    so that waiters do not retry in step) until ``timeout`` seconds have passed.

    Raises:
        WarehouseLockedError: the lock was still held after ``timeout`` seconds;
            the message has DuckDB's, which names the holding process and PID.
    """
    import duckdb

    start, wait = time.monotonic(), first_wait
    while True:
        try:
            return connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            waited = time.monotonic() - start
            if waited + wait > timeout:
                raise WarehouseLockedError(
                    f"warehouse {path} is locked by another process after waiting "
                    f"{waited:.0f} s (limit {timeout:.0f} s); {exc}") from exc
            log.warning("warehouse %s is locked (%s); retrying in %.1f s", path, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 5.0) * random.uniform(0.8, 1.0)


def copy_ratings(database: str, source: str, out: Path, *, table: str = "",
                 params: Mapping[str, Any] | None = None) -> None:
    """Write the rating columns of ``source`` (a quoted table or a file reader call) to ``out``.

    Args:
        database: a DuckDB file (opened read-only) or ``":memory:"``.
        source: what ``extract_ratings.sql``'s ``select`` reads ``FROM``.
        out: the Parquet file to write.
        table: the source table's name as the user gave it, for the not-found error.
        params: values bound in ``source`` (a file reader's ``$path``).

    Raises:
        ValueError: the source table does not exist.
    """
    import duckdb

    sql = read_queries("duckdb/extract_ratings.sql")["select"].format(source=source)
    opened = (duckdb.connect(database) if database == ":memory:"
              else connect_waiting(Path(database), read_only=True))
    with opened as con:
        try:
            relation = con.sql(sql, params=params)
        except duckdb.CatalogException as exc:
            raise ValueError(
                f"source table {table!r} not found in {database}: {exc}") from exc
        relation.write_parquet(str(out))


class DuckDBWarehouse(Warehouse):
    """A DuckDB database file (created by the first write if missing)."""

    dialect = "duckdb"
    id_types = {"integer": "BIGINT", "string": "VARCHAR"}

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return str(self.path)

    def connect_for_write(self, *, timeout: float = 60.0, first_wait: float = 0.25) -> Any:
        """A read-write connection, waiting out another process's lock.

        While another process holds the file (an analyst's read-write session,
        another DAG's publish), retry for up to ``timeout`` seconds
        (:func:`connect_waiting`), then fail naming the holder.

        Raises:
            WarehouseLockedError: with DuckDB's message, which names the process
                and PID holding the lock.
        """
        return connect_waiting(self.path, timeout=timeout, first_wait=first_wait)

    @contextmanager
    def transaction(self, *, timeout: float = 60.0) -> Iterator[Any]:
        """The connection, inside ``BEGIN`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect_for_write(timeout=timeout) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                # A COMMIT that failed (a full disk) has already rolled back: a second
                # ROLLBACK raises, and must not hide the error that matters.
                with suppress(Exception):
                    con.execute("ROLLBACK")
                raise

    def _publish_session(self, schema: str, lock_timeout: float) -> Any:
        return self.transaction(timeout=lock_timeout)  # the file lock serializes every writer

    def _staged_rows(self, staged: Any) -> dict[str, Any]:
        return {"insert_user_factors": staged.users, "insert_item_factors": staged.items,
                "insert_predictions": staged.predictions}

    def _insert(self, cur: Any, sql: str, model_id: str, rows: Any) -> None:
        cur.register("staged", rows)  # read in place: Arrow, no copy
        try:
            cur.execute(sql, {"model_id": model_id})
        finally:
            cur.unregister("staged")

    def _point_views(self, cur: Any, q: Mapping[str, str], model_id: str) -> None:
        cur.execute(q["model_width"], {"model_id": model_id})
        (width,) = cur.fetchone()
        # the views' FLOAT[width] follows the model
        run_statements(cur, q["create_views"].replace("{width}", str(width)))

    def run_query(self, file: str, name: str, *, schema: str = "factorflow",
                  params: Mapping[str, Any] | None = None,
                  fields: Mapping[str, str] | None = None) -> tuple[list[str], list[tuple]]:
        import duckdb

        sql = self.queries(file, schema, **dict(fields or {}))[name]
        if not self.path.is_file():
            raise LookupError(f"no model published in {self.path} schema {schema}: no such file")
        with connect_waiting(self.path, read_only=True) as con:
            try:
                cursor = con.execute(sql, dict(params or {}))
            except duckdb.CatalogException as exc:
                raise LookupError(f"no model published in {self.path} schema {schema}") from exc
            return [d[0] for d in cursor.description], cursor.fetchall()

    def extract_ratings(self, source_table: str, out: Path) -> None:
        source = quote_table(source_table)
        if not self.path.is_file():
            raise FileNotFoundError(f"warehouse file not found: {self.path}")
        copy_ratings(str(self.path), source, out, table=source_table)

    def replace_table(self, table: str, data: Any) -> int:
        quoted = quote_table(table)
        with self.transaction() as con:
            con.register("replacing", data)
            if "." in table:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted.split('.')[0]}")
            con.execute(f"CREATE OR REPLACE TABLE {quoted} AS SELECT * FROM replacing")
            (n,) = con.execute(f"SELECT count(*) FROM {quoted}").fetchone()
        return int(n)
