"""The PostgreSQL back end: publishes serialized per schema, rows moved in by ``COPY``.

Publishers of one schema take a transaction-scoped advisory lock; one that
waits past its timeout fails naming the holder. Readers keep seeing the
previous model until the commit (MVCC). Schema migrations and view changes
take ACCESS EXCLUSIVE locks, so they run only when the schema lacks them. The
SQL is ``include/sql/postgres/``; targets and sessions are
:mod:`factorflow.warehouse.postgres_targets`.
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from factorflow.paths import read_queries
from factorflow.scratch import scratch_dir
from factorflow.warehouse.base import (
    SCHEMA_STEPS,
    Warehouse,
    WarehouseLockedError,
    run_statements,
)
from factorflow.warehouse.identifiers import quote_identifier, quote_table
from factorflow.warehouse.postgres_targets import as_target, copy_in, copy_out, sqlstate, transaction

#: Columns the extract keeps (the rest of a source table is ignored).
RATING_COLUMNS = ("user_id", "item_id", "rating", "rated_at")
#: publish.sql steps that take ACCESS EXCLUSIVE locks: run only when schema_state asks.
MIGRATIONS = ("migrate_model_runs", "migrate_item_factors")
_ARROW_TYPES = {"smallint": "int64", "integer": "int64", "bigint": "int64", "real": "float64",
                "double precision": "float64", "numeric": "float64", "text": "string",
                "character varying": "string", "character": "string", "uuid": "string"}


class PostgresWarehouse(Warehouse):
    """A PostgreSQL database (a ``postgresql://`` URI or a PostgresTarget)."""

    dialect = "postgres"
    id_types = {"integer": "BIGINT", "string": "TEXT"}

    def __init__(self, target: Any):
        self.target = as_target(target)

    @property
    def name(self) -> str:
        return self.target.name

    def transaction(self) -> Any:
        return transaction(self.target)

    @contextmanager
    def _publish_session(self, schema: str, lock_timeout: float) -> Iterator[Any]:
        q = self.queries("publish.sql", schema)
        with transaction(self.target) as cur:
            # lock_timeout stays for the whole publish: a statement stuck behind another
            # session's lock fails, and the task's retry tries again, instead of hanging.
            cur.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
            try:
                cur.execute(q["advisory_lock"], {"schema": schema})
            except Exception as exc:
                if sqlstate(exc) != "55P03":  # lock_not_available
                    raise
                holder = self._lock_holder(q["lock_holder"], schema)
                raise WarehouseLockedError(
                    f"schema {schema} of PostgreSQL warehouse {self.name} is being published "
                    f"by another session after waiting {lock_timeout:.0f} s; held by {holder}"
                ) from exc
            yield cur

    def _lock_holder(self, query: str, schema: str) -> str:
        """Who holds a schema's publish lock, in words (from a fresh session)."""
        try:
            with transaction(self.target) as cur:
                cur.execute(query, {"schema": schema})
                row = cur.fetchone()
        except Exception as exc:  # the report must not hide the lock error
            return f"an unknown session ({exc})"
        if row is None:
            return "a session that has since let go"
        pid, user, app, addr, state, since = row
        return (f"PID {pid} (user {user}, application {app or '-'}, client {addr or 'local'}, "
                f"{state}, since {since})")

    def _create_schema(self, cur: Any, q: Mapping[str, str], schema: str) -> None:
        later = (*MIGRATIONS, "create_views")
        for name in SCHEMA_STEPS:
            if name not in later:
                run_statements(cur, q.get(name, ""))
        cur.execute(q["schema_state"], {"schema": schema})
        migrated, has_views = cur.fetchone()
        for name in ([] if migrated else list(MIGRATIONS)) + (
                ["create_views"] if not (migrated and has_views) else []):
            run_statements(cur, q[name])

    def _staged_rows(self, staged: Any) -> dict[str, bytes]:
        """CSV for ``COPY``, written before the publish lock is taken."""
        return {
            "insert_user_factors": _factor_csv(staged.model_id, staged.users, "user_id"),
            "insert_item_factors": _factor_csv(staged.model_id, staged.items, "item_id",
                                               extra=("n_ratings", "mean_rating")),
            "insert_predictions": _csv(staged.model_id, staged.predictions,
                                       {c: c for c in ("user_id", "item_id", "score", "rank")}),
        }

    def _insert(self, cur: Any, sql: str, model_id: str, rows: bytes) -> None:
        copy_in(cur, sql, rows)

    def run_query(self, file: str, name: str, *, schema: str = "factorflow",
                  params: Mapping[str, Any] | None = None,
                  fields: Mapping[str, str] | None = None) -> tuple[list[str], list[tuple]]:
        sql = self.queries(file, schema, **dict(fields or {}))[name]
        with transaction(self.target) as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            try:
                cur.execute(sql, dict(params or {}))
            except Exception as exc:
                if sqlstate(exc) in ("42P01", "3F000", "42883"):  # no table / schema / function
                    raise LookupError(
                        f"no model published in {self.name} schema {schema}") from exc
                raise
            return [d[0] for d in cur.description], cur.fetchall()

    def extract_ratings(self, source_table: str, out: Path) -> None:
        """Stream the table's rating columns to ``out`` through ``COPY`` (types kept).

        Integer ids stay integers, text ids strings, ratings become float64,
        timestamps stay timestamps.
        """
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq

        schema, _, table = source_table.rpartition(".")
        schema = schema or "public"
        quoted = quote_table(f"{schema}.{table}")
        q = read_queries("postgres/extract_ratings.sql")
        # the CSV beside ``out`` (the artifacts' disk, not a RAM-backed /tmp)
        with scratch_dir(Path(out).parent, ".factorflow-extract-") as tmp, \
                transaction(self.target) as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(q["columns"], {"schema": schema, "table": table})
            types = {name: kind for name, kind in cur.fetchall() if name in RATING_COLUMNS}
            if not types:
                raise ValueError(f"source table {source_table!r} not found in {self.name} "
                                 f"(or it has none of the columns {', '.join(RATING_COLUMNS)})")
            columns = ", ".join(quote_identifier(c) for c in types)
            csv_path = Path(tmp) / "ratings.csv"
            copy_out(cur, q["select"].format(columns=columns, source=quoted), csv_path)
            arrow_types = {c: _arrow_type(pa, t) for c, t in types.items()}
            data = pcsv.read_csv(csv_path, convert_options=pcsv.ConvertOptions(
                column_types=arrow_types, strings_can_be_null=True,
                quoted_strings_can_be_null=False))
            pq.write_table(data, out)

    def replace_table(self, table: str, data: Any) -> int:
        """Integer columns become BIGINT, floats DOUBLE PRECISION, strings TEXT,
        timestamps TIMESTAMP(TZ)."""
        import pyarrow.csv as pcsv

        quoted = quote_table(table)
        columns = ", ".join(f"{quote_identifier(f.name)} {_pg_type(f.type)}" for f in data.schema)
        sink = io.BytesIO()
        pcsv.write_csv(data, sink)
        with transaction(self.target) as cur:
            if "." in table:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted.split('.')[0]}")
            cur.execute(f"DROP TABLE IF EXISTS {quoted}")
            cur.execute(f"CREATE TABLE {quoted} ({columns})")
            copy_in(cur, f"COPY {quoted} FROM STDIN WITH (FORMAT csv, HEADER true)",
                    sink.getvalue())
        return data.num_rows


def _arrow_type(pa: Any, pg_type: str) -> Any:
    if pg_type.startswith("timestamp"):
        return pa.timestamp("us", tz="UTC") if "with time zone" in pg_type else pa.timestamp("us")
    if pg_type == "date":
        return pa.date32()
    return getattr(pa, _ARROW_TYPES.get(pg_type, "string"))()


def _pg_type(arrow_type: Any) -> str:
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMPTZ" if arrow_type.tz else "TIMESTAMP"
    return "TEXT"


def _csv(model_id: str, table: Any, columns: Mapping[str, str]) -> bytes:
    """CSV (with header) of ``model_id`` plus ``table``'s columns, lists as ``{a,b}``.

    Args:
        columns: output name -> DuckDB expression over ``staged``.
    """
    import duckdb
    import pyarrow.csv as pcsv

    select = ", ".join(f"{expr} AS {name}" for name, expr in columns.items())
    with duckdb.connect() as con:
        con.register("staged", table)
        text = con.sql(f"SELECT $model_id AS model_id, {select} FROM staged",
                       params={"model_id": model_id}).to_arrow_table()
    sink = io.BytesIO()
    pcsv.write_csv(text, sink)
    return sink.getvalue()


def _factor_csv(model_id: str, table: Any, id_column: str, extra: tuple[str, ...] = ()) -> bytes:
    """CSV of a staged factor table; ``extra`` columns (e.g. item statistics) as they are."""
    array = "'{' || array_to_string(factors, ',') || '}'"
    return _csv(model_id, table, {id_column: "id", "bias": "bias", "factors": array,
                                  **{c: c for c in extra}})
