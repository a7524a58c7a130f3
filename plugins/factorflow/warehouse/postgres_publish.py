"""Publishing into a PostgreSQL warehouse: one transaction per model, serialized per schema.

The SQL is ``include/sql/postgres/publish.sql``; connections, transactions and
``COPY`` come from :mod:`factorflow.warehouse.postgres`.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Mapping

from factorflow.warehouse.identifiers import quote_identifier
from factorflow.warehouse.postgres import (
    PG_ID_TYPES,
    PostgresTarget,
    as_target,
    copy_in,
    queries,
    sqlstate,
    transaction,
)

log = logging.getLogger(__name__)


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


#: publish.sql steps that take ACCESS EXCLUSIVE locks: run only when schema_state asks.
MIGRATIONS = ("migrate_model_runs", "migrate_item_factors")


def publish(target: Any, staged: Any, *, schema: str, keep: int,
            lock_timeout: float = 60.0) -> dict[str, Any]:
    """Write a staged model (:func:`factorflow.stages.publish.stage_model`) in one transaction.

    Publishers of the same schema are serialized by a transaction-scoped
    advisory lock; one that waits past ``lock_timeout`` fails naming the holder.
    Readers keep seeing the previous model until the commit (MVCC).

    Raises:
        WarehouseLockedError: another session held the publish lock too long.
        ValueError: the published tables hold another id type than this model.
    """
    from factorflow.warehouse.duckdb import WarehouseLockedError, create_schema_objects, statements

    target = as_target(target)
    q = queries("publish.sql", schema, user_id_type=PG_ID_TYPES[staged.id_kind("user")],
                 item_id_type=PG_ID_TYPES[staged.id_kind("item")])
    payload = {
        "user": _factor_csv(staged.model_id, staged.users, "user_id"),
        "item": _factor_csv(staged.model_id, staged.items, "item_id",
                            extra=("n_ratings", "mean_rating")),
        "predictions": _csv(staged.model_id, staged.predictions,
                            {c: c for c in ("user_id", "item_id", "score", "rank")}),
    }
    with transaction(target) as cur:
        cur.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout * 1000)}ms'")
        try:
            cur.execute(q["advisory_lock"], {"schema": schema})
        except Exception as exc:
            if sqlstate(exc) != "55P03":  # lock_not_available
                raise
            holder = _lock_holder(target, q["lock_holder"], schema)
            raise WarehouseLockedError(
                f"schema {schema} of PostgreSQL warehouse {target.name} is being published "
                f"by another session after waiting {lock_timeout:.0f} s; held by {holder}"
            ) from exc
        # lock_timeout stays: a statement stuck behind another session's lock fails, and
        # the task's retry tries again, instead of the publish hanging.
        create_schema_objects(cur.execute, {k: v for k, v in q.items()
                                            if k not in (*MIGRATIONS, "create_views")})
        cur.execute(q["schema_state"], {"schema": schema})
        migrated, has_views = cur.fetchone()
        for name in ([] if migrated else list(MIGRATIONS)) + (
                ["create_views"] if not (migrated and has_views) else []):
            for statement in statements(q[name]):
                cur.execute(statement)
        _check_id_types(cur, q["column_type"], schema, staged)
        for statement in statements(q["delete_models"]):
            cur.execute(statement, {"model_ids": [staged.model_id]})
        copy_in(cur, q["copy_user_factors"], payload["user"])
        copy_in(cur, q["copy_item_factors"], payload["item"])
        copy_in(cur, q["copy_predictions"], payload["predictions"])
        for run in (staged.run, *staged.candidates):
            cur.execute(q["insert_model_run"], run)
        cur.execute(q["point_current"], {"model_id": staged.model_id})
        cur.execute(q["expired_models"], {"keep": keep})
        expired = [row[0] for row in cur.fetchall()]
        if expired:
            for statement in statements(q["delete_models"]):
                cur.execute(statement, {"model_ids": expired})
    summary = {"warehouse": target.name, "schema": schema, **staged.summary()}
    log.info("published model %s to %s.%s: %s", staged.model_id, target.name, schema, summary)
    return summary


def _lock_holder(target: PostgresTarget, query: str, schema: str) -> str:
    """Who holds a schema's publish lock, in words (from a fresh session)."""
    try:
        with transaction(target) as cur:
            cur.execute(query, {"schema": schema})
            row = cur.fetchone()
    except Exception as exc:  # the report must not hide the lock error
        return f"an unknown session ({exc})"
    if row is None:
        return "a session that has since let go"
    pid, user, app, addr, state, since = row
    return (f"PID {pid} (user {user}, application {app or '-'}, client {addr or 'local'}, "
            f"{state}, since {since})")


def _check_id_types(cur: Any, query: str, schema: str, staged: Any) -> None:
    expected = {("user_factors", "user_id"): PG_ID_TYPES[staged.id_kind("user")],
                ("item_factors", "item_id"): PG_ID_TYPES[staged.id_kind("item")]}
    for (table, column), want in expected.items():
        cur.execute(query, {"schema": schema, "table": table, "column": column})
        (have,) = cur.fetchone()
        if have != want:
            raise ValueError(
                f"{schema}.{table}.{column} holds {have} ids but this model's ids are {want}: "
                "publish to another schema or migrate the table")


def rollback(target: Any, *, to: str, schema: str) -> dict[str, Any]:
    """Point ``current_*`` at an earlier kept model (``publish.sql``'s ``rollback``)."""
    target = as_target(target)
    q = queries("publish.sql", schema, user_id_type="", item_id_type="")
    with transaction(target) as cur:
        cur.execute(q["model_exists"], {"model_id": to})
        if not cur.fetchone()[0]:
            raise LookupError(f"no kept model {to!r} in {target.name} schema {schema}")
        cur.execute(q["rollback"], {"model_id": to})
    return {"warehouse": target.name, "schema": schema, "current_model": to}


def materialize_recommendations(target: Any, *, schema: str) -> dict[str, Any]:
    """Rebuild ``<schema>.recommendations_daily`` in one transaction."""
    from factorflow.paths import read_sql
    from factorflow.warehouse.duckdb import statements

    target = as_target(target)
    quoted = quote_identifier(schema)
    with transaction(target) as cur:
        for statement in statements(read_sql("postgres/recommendations_daily.sql").format(schema=quoted)):
            cur.execute(statement)
        cur.execute(f"SELECT count(*) FROM {quoted}.recommendations_daily")
        (rows,) = cur.fetchone()
    return {"table": f"{schema}.recommendations_daily", "rows": int(rows)}
