"""Publish: factor, prediction and run tables into the warehouse, atomically.

One publishing interface, two back ends: a DuckDB file (the default, here) and
PostgreSQL (:mod:`factorflow.warehouse.postgres`), picked by the target. One publish is
one transaction: readers see the previous model or the new one, never a mix,
and a failure part-way leaves every table as it was. A model id is derived
from the DAG run, so a retry replaces its own rows and never touches other
models'.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from factorflow.warehouse.identifiers import quote_identifier
from factorflow.paths import read_queries, read_sql

log = logging.getLogger(__name__)

DUCKDB_ID_TYPES = {"integer": "BIGINT", "string": "VARCHAR"}


def _postgres(warehouse: Any) -> Any:
    """The PostgreSQL publisher module when ``warehouse`` names a Postgres target, else None."""
    from factorflow.warehouse import postgres

    if not postgres.is_postgres(warehouse):
        return None
    from factorflow.warehouse import postgres_publish

    return postgres_publisher


class WarehouseLockedError(RuntimeError):
    """The DuckDB file stayed locked by another process past the retry budget."""


def connect_for_write(warehouse: str | Path, *, timeout: float = 60.0,
                      first_wait: float = 0.25) -> Any:
    """A read-write DuckDB connection, waiting out another process's lock.

    DuckDB lets one process write a file at a time. While another holds it (an
    analyst's read-write session, a concurrent run), retry with exponential
    backoff for up to ``timeout`` seconds, then fail naming the holder.

    Raises:
        WarehouseLockedError: with DuckDB's message, which names the process
            and PID holding the lock.
    """
    import duckdb

    deadline, wait = time.monotonic() + timeout, first_wait
    while True:
        try:
            return duckdb.connect(str(warehouse))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() + wait > deadline:
                raise WarehouseLockedError(
                    f"warehouse {warehouse} is locked by another process after waiting "
                    f"{timeout:.0f} s; {exc}") from exc
            log.warning("warehouse %s is locked (%s); retrying in %.1f s", warehouse, exc, wait)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


def publish_model(
    warehouse: Any,
    *,
    model_id: str,
    model_dir: str | Path,
    matrix_dir: str | Path,
    schema: str = "factorflow",
    run_info: Mapping[str, Any] | None = None,
    keep: int = 5,
    lock_timeout: float = 60.0,
    candidates: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Write one trained model's tables in a single transaction.

    Args:
        warehouse: a DuckDB database file (created if missing), or a PostgreSQL
            target (``postgresql://`` URI or :class:`factorflow.warehouse.postgres.PostgresTarget`).
        model_id: the model's key; rows already stored under it are replaced.
        model_dir: output of the train stage (``model.npz``, ``metrics.json``,
            ``recommendations.npz``).
        matrix_dir: output of the build stage (id maps and counts).
        schema: target schema, validated against a strict identifier pattern.
        run_info: ``dag_id``, ``dag_run_id``, ``source_table``, ``params`` (dict)
            and ``timings`` (stage -> ``{"seconds", "peak_rss_mb"}``, or stage ->
            seconds) to record in ``model_runs``'s ``timings`` and ``peak_rss_mb``.
        keep: models kept (newest first); older ones are deleted in the same
            transaction. The ``current_*`` views then show this model.
        lock_timeout: seconds to wait for another writer's lock.
        candidates: a sweep's train-stage output directories (this model's
            included); each gets a ``model_runs`` row with ``candidate_of`` =
            ``model_id`` and no factors, in the same transaction.

    Returns:
        JSON-safe summary: warehouse, schema, model id and row counts per table.
    """
    from factorflow.stages.publish import stage_model

    if int(keep) < 1:
        raise ValueError(f"keep must be >= 1 (the new model is always kept), got {keep}")
    quoted_schema = quote_identifier(schema)
    staged = stage_model(model_id, model_dir, matrix_dir, run_info, candidates)
    if (pg := _postgres(warehouse)) is not None:
        return pg.publish(warehouse, staged, schema=schema, keep=int(keep),
                          lock_timeout=lock_timeout)

    q = {k: v.format(schema=quoted_schema, user_id_type=DUCKDB_ID_TYPES[staged.id_kind("user")],
                     item_id_type=DUCKDB_ID_TYPES[staged.id_kind("item")], width=staged.width)
         for k, v in read_queries("publish.sql").items()}
    Path(warehouse).parent.mkdir(parents=True, exist_ok=True)
    with connect_for_write(warehouse, timeout=lock_timeout) as con:
        con.register("staged_user_factors", staged.users)
        con.register("staged_item_factors", staged.items)
        con.register("staged_predictions", staged.predictions)
        con.execute("BEGIN TRANSACTION")
        try:
            create_schema_objects(con.execute, q)
            _check_id_types(con, q["column_type"], schema, staged)
            for statement in statements(q["delete_model"]):
                con.execute(statement, {"model_id": model_id})
            for name in ("insert_user_factors", "insert_item_factors", "insert_predictions"):
                con.execute(q[name], {"model_id": model_id})
            for run in (staged.run, *staged.candidates):
                con.execute(q["insert_model_run"], run)
            con.execute(q["point_current"], {"model_id": model_id})
            for statement in statements(q["retain"]):
                con.execute(statement, {"keep": int(keep)} if "$keep" in statement else None)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    summary = {"warehouse": str(warehouse), "schema": schema, **staged.summary()}
    log.info("published model %s to %s.%s: %s", model_id, warehouse, schema, summary)
    return summary


def rollback(warehouse: Any, *, to: str, schema: str = "factorflow") -> dict[str, Any]:
    """Point the ``current_*`` views at an earlier kept model.

    The SQL it runs is ``UPDATE <schema>.current_pointer SET model_id = <to>
    WHERE name = 'current'`` (``include/sql/publish.sql``, ``rollback``; the
    Postgres file is ``include/sql/postgres/publish.sql``).

    Raises:
        LookupError: ``to`` is not a kept model of this schema.
    """
    if (pg := _postgres(warehouse)) is not None:
        return pg.rollback(warehouse, to=to, schema=schema)
    queries = read_queries("publish.sql")
    quoted = quote_identifier(schema)
    with connect_for_write(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            (found,) = con.execute(queries["model_exists"].format(schema=quoted),
                                   {"model_id": to}).fetchone()
            if not found:
                raise LookupError(f"no kept model {to!r} in {warehouse} schema {schema}")
            con.execute(queries["rollback"].format(schema=quoted), {"model_id": to})
            (width,) = con.execute(queries["model_width"].format(schema=quoted),
                                   {"model_id": to}).fetchone()
            for statement in statements(queries["create_views"].format(schema=quoted, width=width)):
                con.execute(statement)  # the views' FLOAT[width] follows the model
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return {"warehouse": str(warehouse), "schema": schema, "current_model": to}


#: Named queries that create or migrate the published schema, in order (a
#: dialect's file may lack some, e.g. DuckDB needs no SQL functions).
SCHEMA_STEPS = ("create_schema", "create_model_runs", "migrate_model_runs", "create_pointer",
                "create_user_factors", "create_item_factors", "migrate_item_factors",
                "create_predictions", "create_functions", "create_views")


def create_schema_objects(execute: Any, queries: Mapping[str, str]) -> None:
    """Run every schema step a dialect's ``publish.sql`` defines, statement by statement."""
    for name in SCHEMA_STEPS:
        for statement in statements(queries.get(name, "")):
            execute(statement)


def statements(sql: str) -> list[str]:
    """The ``;``-separated statements of one named query, comments dropped.

    A ``$$ ... $$`` body (a Postgres function) stays one statement.
    """
    lines = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    parts, out = lines.split("$$"), [""]
    for i, part in enumerate(parts):
        if i % 2:  # inside a dollar-quoted body
            out[-1] += "$$" + part + "$$"
            continue
        chunks = part.split(";")
        out[-1] += chunks[0]
        out.extend(chunks[1:])
    return [s.strip() for s in out if s.strip()]


def _check_id_types(con: Any, query: str, schema: str, staged: Any) -> None:
    """Fail clearly when a new model's id type differs from the published tables'."""
    expected = {("user_factors", "user_id"): DUCKDB_ID_TYPES[staged.id_kind("user")],
                ("item_factors", "item_id"): DUCKDB_ID_TYPES[staged.id_kind("item")]}
    for (table, column), want in expected.items():
        (have,) = con.execute(query, {"schema": schema, "table": table, "column": column}).fetchone()
        if have != want:
            raise ValueError(
                f"{schema}.{table}.{column} holds {have} ids but this model's ids are {want}: "
                "publish to another schema or migrate the table"
            )


def run_query(warehouse: Any, file: str, name: str, *, schema: str = "factorflow",
              params: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
    """Run one named read-only query of ``include/sql/<file>`` in the warehouse's dialect.

    DuckDB reads ``include/sql/<file>``, PostgreSQL ``include/sql/postgres/<file>``;
    both define the same names with the same bound parameters.

    Returns:
        ``(column names, rows)``.

    Raises:
        LookupError: nothing is published in ``schema`` yet.
    """
    import duckdb

    if _postgres(warehouse) is not None:
        from factorflow.warehouse.postgres import run_query as run_postgres_query

        return run_postgres_query(warehouse, file, name, schema=schema, params=params)
    sql = read_queries(file)[name].format(schema=quote_identifier(schema))
    if not Path(warehouse).is_file():
        raise LookupError(f"no model published in {warehouse} schema {schema}: no such file")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        try:
            cursor = con.execute(sql, dict(params or {}))
        except duckdb.CatalogException as exc:
            raise LookupError(f"no model published in {warehouse} schema {schema}") from exc
        return [d[0] for d in cursor.description], cursor.fetchall()


def latest_result(warehouse: Any, *, schema: str = "factorflow",
                  user_id: Any = None, top_n: int = 5) -> dict[str, Any]:
    """The current model's metrics and one user's top recommendations.

    Args:
        warehouse: DuckDB database file or PostgreSQL target.
        schema: schema the models were published to.
        user_id: the user to show; defaults to the smallest published user id.
        top_n: number of recommendations.

    Returns:
        ``{"model": {...run columns...}, "user_id": id, "recommendations": [{rank, item_id, score}]}``.
    """
    columns, rows = run_query(warehouse, "latest_result.sql", "latest_model", schema=schema)
    if not rows:
        raise LookupError(f"no model published in {warehouse} schema {schema}")
    model = dict(zip(columns, rows[0]))
    if user_id is None:
        [(user_id,)] = run_query(warehouse, "latest_result.sql", "first_user", schema=schema,
                                 params={"model_id": model["model_id"]})[1]
    _, recs = run_query(warehouse, "latest_result.sql", "top_predictions", schema=schema,
                        params={"model_id": model["model_id"], "user_id": user_id, "top_n": top_n})
    return {"model": model, "user_id": user_id,
            "recommendations": [dict(zip(("rank", "item_id", "score"), r)) for r in recs]}


def materialize_recommendations(warehouse: Any, *, schema: str = "factorflow") -> dict[str, Any]:
    """Rebuild ``<schema>.recommendations_daily`` from ``current_predictions``.

    Returns:
        ``{"table": name, "rows": n}``.
    """
    if (pg := _postgres(warehouse)) is not None:
        return pg.materialize_recommendations(warehouse, schema=schema)
    sql = read_sql("recommendations_daily.sql").format(schema=quote_identifier(schema))
    with connect_for_write(warehouse) as con:
        con.execute(sql)
        (rows,) = con.execute(
            f"SELECT count(*) FROM {quote_identifier(schema)}.recommendations_daily").fetchone()
    return {"table": f"{schema}.recommendations_daily", "rows": int(rows)}


def wide_factors_sql(*, rank: int, which: str = "user", schema: str = "factorflow") -> str:
    """``CREATE VIEW <schema>.current_<which>_factors_wide`` with columns ``f1 .. f<rank>``.

    The wide-column layout for tools or warehouses without array types: one
    REAL column per factor. The same SQL runs on DuckDB and PostgreSQL (both
    index arrays from 1). A pair's score is then
    ``global_mean + u.bias + i.bias + u.f1 * i.f1 + ... + u.fk * i.fk``.

    Args:
        rank: number of factor columns (``len(factors)`` of the model).
        which: ``"user"`` or ``"item"``.
        schema: the publish schema.
    """
    if which not in ("user", "item"):
        raise ValueError(f"which must be 'user' or 'item', got {which!r}")
    if not 1 <= int(rank) <= 4096:
        raise ValueError(f"rank must be in 1..4096, got {rank}")
    quoted = quote_identifier(schema)
    columns = ", ".join(f"factors[{k}] AS f{k}" for k in range(1, int(rank) + 1))
    return (f"CREATE OR REPLACE VIEW {quoted}.current_{which}_factors_wide AS "
            f"SELECT model_id, {which}_id, bias, {columns} FROM {quoted}.current_{which}_factors")
