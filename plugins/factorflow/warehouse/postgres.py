"""The PostgreSQL warehouse back end: targets, sessions, extract and queries.

A target is a ``postgresql://`` URI or a :class:`PostgresTarget` whose
``connect`` returns a DB-API connection (psycopg 3, or psycopg2); the Airflow
glue builds one from a connection id with the Postgres provider's hook. The
SQL lives in ``include/sql/postgres/`` under the same names as the DuckDB
files, so both back ends answer the same queries. Publishing is in
:mod:`factorflow.warehouse.postgres_publish`.
"""

from __future__ import annotations

import io
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NamedTuple

from factorflow.warehouse.identifiers import quote_identifier, quote_table
from factorflow.paths import read_queries


PG_ID_TYPES = {"integer": "BIGINT", "string": "TEXT"}
URI_PREFIXES = ("postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://")
#: Columns the extract keeps (the rest of a source table is ignored).
RATING_COLUMNS = ("user_id", "item_id", "rating", "rated_at")


class PostgresTarget(NamedTuple):
    """A PostgreSQL warehouse.

    Attributes:
        connect: returns a new DB-API connection (psycopg 3 or psycopg2).
        name: how logs and summaries name it (never with a password).
    """

    connect: Callable[[], Any]
    name: str


class WarehouseUnavailableError(ConnectionError):
    """The PostgreSQL server could not be reached."""


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


def queries(file: str, schema: str, **fmt: str) -> dict[str, str]:
    return {k: v.format(schema=quote_identifier(schema), **fmt)
            for k, v in read_queries(f"postgres/{file}").items()}


def run_query(target: Any, file: str, name: str, *, schema: str,
              params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
    """One named query of ``include/sql/postgres/<file>``, read-only.

    Raises:
        LookupError: the schema or its tables do not exist (nothing published).
    """
    target = as_target(target)
    sql = queries(file, schema)[name]
    with transaction(target) as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        try:
            cur.execute(sql, dict(params or {}))
        except Exception as exc:
            if sqlstate(exc) in ("42P01", "3F000", "42883"):  # no table / schema / function
                raise LookupError(f"no model published in {target.name} schema {schema}") from exc
            raise
        return [d[0] for d in cur.description], cur.fetchall()


_ARROW_TYPES = {"smallint": "int64", "integer": "int64", "bigint": "int64", "real": "float64",
                "double precision": "float64", "numeric": "float64", "text": "string",
                "character varying": "string", "character": "string", "uuid": "string"}


def extract(target: Any, source_table: str, out: Path) -> list[str]:
    """Stream ``source_table``'s rating columns to the Parquet file ``out``.

    Types follow the source's: integer ids stay integers, text ids strings,
    ratings become float64, timestamps stay timestamps.

    Returns:
        The extracted column names.

    Raises:
        ValueError: the table does not exist.
    """
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    target = as_target(target)
    schema, _, table = source_table.rpartition(".")
    schema = schema or "public"
    quoted = quote_table(f"{schema}.{table}")
    q = read_queries("postgres/extract_ratings.sql")
    with tempfile.TemporaryDirectory() as tmp, transaction(target) as cur:
        cur.execute("SET TRANSACTION READ ONLY")
        cur.execute(q["columns"], {"schema": schema, "table": table})
        types = {name: kind for name, kind in cur.fetchall() if name in RATING_COLUMNS}
        if not types:
            raise ValueError(f"source table {source_table!r} not found in {target.name} "
                             f"(or it has none of the columns {', '.join(RATING_COLUMNS)})")
        columns = ", ".join(quote_identifier(c) for c in types)
        csv_path = Path(tmp) / "ratings.csv"
        copy_out(cur, q["copy_out"].format(columns=columns, source=quoted), csv_path)
        arrow_types = {c: _arrow_type(pa, t) for c, t in types.items()}
        data = pcsv.read_csv(csv_path, convert_options=pcsv.ConvertOptions(
            column_types=arrow_types, strings_can_be_null=True, quoted_strings_can_be_null=False))
        pq.write_table(data, out)
    return list(types)


def _arrow_type(pa: Any, pg_type: str) -> Any:
    if pg_type.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC") if "with time zone" in pg_type else pa.timestamp("us")
    if pg_type == "date":
        return pa.date32()
    return getattr(pa, _ARROW_TYPES.get(pg_type, "string"))()


def replace_table(target: Any, table: str, data: Any) -> int:
    """Create or replace ``table`` with an Arrow table's rows, in one transaction.

    Integer columns become BIGINT, floats DOUBLE PRECISION, strings TEXT,
    timestamps TIMESTAMP. Used to load demo and test ratings.

    Returns:
        The number of rows written.
    """
    import pyarrow as pa

    def pg_type(t: Any) -> str:
        if pa.types.is_integer(t):
            return "BIGINT"
        if pa.types.is_floating(t):
            return "DOUBLE PRECISION"
        if pa.types.is_timestamp(t):
            return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
        return "TEXT"

    quoted = quote_table(table)
    columns = ", ".join(f"{quote_identifier(f.name)} {pg_type(f.type)}" for f in data.schema)
    with transaction(target) as cur:
        if "." in table:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted.split('.')[0]}")
        cur.execute(f"DROP TABLE IF EXISTS {quoted}")
        cur.execute(f"CREATE TABLE {quoted} ({columns})")
        copy_in(cur, f"COPY {quoted} FROM STDIN WITH (FORMAT csv, HEADER true)", _plain_csv(data))
    return data.num_rows


def _plain_csv(data: Any) -> bytes:
    import pyarrow.csv as pcsv

    sink = io.BytesIO()
    pcsv.write_csv(data, sink)
    return sink.getvalue()
