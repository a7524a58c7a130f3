"""Publish: factor, prediction and run tables into the warehouse, atomically.

One publish is one DuckDB transaction: readers see the previous model or the
new one, never a mix, and a failure part-way leaves every table as it was. A
model id is derived from the DAG run, so a retry replaces its own rows and
never touches other models'.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from factorflow.identifiers import quote_identifier
from factorflow.paths import read_queries, read_sql

log = logging.getLogger(__name__)

#: model_runs columns filled from the train stage's metrics (same names).
METRIC_COLUMNS = (
    "rank", "epochs_run", "best_epoch", "train_rmse", "train_mae", "valid_rmse",
    "valid_mae", "baseline_valid_rmse", "baseline_valid_mae", "fit_seconds",
    "ratings_per_second",
)


def _duckdb_type(arrow_type: Any) -> str:
    """The DuckDB column type that keeps ids exactly as the source gave them."""
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "VARCHAR"
    raise ValueError(f"unsupported id type {arrow_type}: ids must be integers or strings")


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


def _factor_table(ids: Any, bias: np.ndarray, factors: np.ndarray) -> Any:
    """Arrow table ``(id, bias, factors FLOAT[])`` without copying the factors."""
    import pyarrow as pa

    n, rank = factors.shape
    flat = pa.array(np.ascontiguousarray(factors, np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, (n + 1) * rank, rank, dtype=np.int32))
    return pa.table({
        "id": ids,
        "bias": pa.array(np.asarray(bias, np.float32)),
        "factors": pa.ListArray.from_arrays(offsets, flat),
    })


def _prediction_table(user_ids: Any, item_ids: Any, top_items: np.ndarray,
                      top_scores: np.ndarray) -> Any:
    """Long Arrow table of the top-N lists; padding slots (item -1) are dropped."""
    import pyarrow as pa

    n_users, n = top_items.shape
    keep = top_items.reshape(-1) >= 0
    users = np.repeat(np.arange(n_users), n)[keep]
    return pa.table({
        "user_id": user_ids.take(pa.array(users)),
        "item_id": item_ids.take(pa.array(top_items.reshape(-1)[keep])),
        "score": pa.array(top_scores.reshape(-1)[keep].astype(np.float32)),
        "rank": pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), n_users)[keep]),
    })


def publish_model(
    warehouse: str | Path,
    *,
    model_id: str,
    model_dir: str | Path,
    matrix_dir: str | Path,
    schema: str = "factorflow",
    run_info: Mapping[str, Any] | None = None,
    keep: int = 5,
    lock_timeout: float = 60.0,
) -> dict[str, Any]:
    """Write one trained model's tables in a single transaction.

    Args:
        warehouse: DuckDB database file (created if missing).
        model_id: the model's key; rows already stored under it are replaced.
        model_dir: output of the train stage (``model.npz``, ``metrics.json``,
            ``recommendations.npz``).
        matrix_dir: output of the build stage (id maps and counts).
        schema: target schema, validated against a strict identifier pattern.
        run_info: ``dag_id``, ``dag_run_id``, ``source_table``, ``params`` (dict)
            and ``timings`` (dict) to record in ``model_runs``.
        keep: models kept (newest first); older ones are deleted in the same
            transaction. The ``current_*`` views then show this model.
        lock_timeout: seconds to wait for another process's write lock.

    Returns:
        JSON-safe summary: schema, model id and row counts per table.
    """
    import pyarrow.parquet as pq

    from factorflow.matrix import ITEMS_FILE, SUMMARY_FILE, USERS_FILE
    from factorflow.training_run import METRICS_FILE, MODEL_FILE, RECOMMENDATIONS_FILE

    if int(keep) < 1:
        raise ValueError(f"keep must be >= 1 (the new model is always kept), got {keep}")
    model_dir, matrix_dir = Path(model_dir), Path(matrix_dir)
    quoted_schema = quote_identifier(schema)
    info = dict(run_info or {})
    metrics = json.loads((model_dir / METRICS_FILE).read_text())
    counts = json.loads((matrix_dir / SUMMARY_FILE).read_text())
    user_ids = pq.read_table(matrix_dir / USERS_FILE)["user_id"].combine_chunks()
    item_ids = pq.read_table(matrix_dir / ITEMS_FILE)["item_id"].combine_chunks()
    with np.load(model_dir / MODEL_FILE, allow_pickle=False) as m:
        global_mean = float(m["mean"])
        users = _factor_table(user_ids, m["user_bias"], m["user_factors"])
        items = _factor_table(item_ids, m["item_bias"], m["item_factors"])
    with np.load(model_dir / RECOMMENDATIONS_FILE, allow_pickle=False) as rec:
        predictions = _prediction_table(user_ids, item_ids, rec["items"], rec["scores"])
    for name, table in (("user", users), ("item", items)):
        if not np.isfinite(table["factors"].combine_chunks().flatten().to_numpy()).all():
            raise ValueError(f"model {model_id} has non-finite {name} factors; refusing to publish")

    q = {k: v.format(schema=quoted_schema, user_id_type=_duckdb_type(user_ids.type),
                     item_id_type=_duckdb_type(item_ids.type))
         for k, v in read_queries("publish.sql").items()}
    run_row = {
        "model_id": model_id,
        "dag_id": info.get("dag_id"),
        "dag_run_id": info.get("dag_run_id"),
        "source_table": info.get("source_table"),
        "params": json.dumps(info.get("params", {}), sort_keys=True, default=str),
        "n_users": counts["n_users"],
        "n_items": counts["n_items"],
        "n_ratings": counts["n_ratings"],
        "n_train": counts["n_train"],
        "n_valid": counts["n_valid"],
        **{c: metrics.get(c) for c in METRIC_COLUMNS},
        "loss": str(metrics.get("config", {}).get("loss", "squared")),
        "optimizer": metrics.get("config", {}).get("optimizer"),
        "timings": json.dumps(info.get("timings", {}), sort_keys=True),
        "history": json.dumps(metrics.get("history", [])),
        "global_mean": global_mean,
    }

    Path(warehouse).parent.mkdir(parents=True, exist_ok=True)
    with connect_for_write(warehouse, timeout=lock_timeout) as con:
        con.register("staged_user_factors", users)
        con.register("staged_item_factors", items)
        con.register("staged_predictions", predictions)
        con.execute("BEGIN TRANSACTION")
        try:
            for name in ("create_schema", "create_model_runs", "migrate_model_runs",
                         "create_pointer", "create_user_factors", "create_item_factors",
                         "create_predictions", "create_views"):
                for statement in _statements(q[name]):
                    con.execute(statement)
            _check_id_types(con, q["column_type"], schema, user_ids.type, item_ids.type)
            for statement in _statements(q["delete_model"]):
                con.execute(statement, {"model_id": model_id})
            for name in ("insert_user_factors", "insert_item_factors", "insert_predictions"):
                con.execute(q[name], {"model_id": model_id})
            con.execute(q["insert_model_run"], run_row)
            con.execute(q["point_current"], {"model_id": model_id})
            for statement in _statements(q["retain"]):
                con.execute(statement, {"keep": int(keep)} if "$keep" in statement else None)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    summary = {
        "warehouse": str(warehouse),
        "schema": schema,
        "model_id": model_id,
        "user_factors": users.num_rows,
        "item_factors": items.num_rows,
        "predictions": predictions.num_rows,
        "valid_rmse": metrics.get("valid_rmse"),
        "baseline_valid_rmse": metrics.get("baseline_valid_rmse"),
    }
    log.info("published model %s to %s.%s: %s", model_id, warehouse, schema, summary)
    return summary


def rollback(warehouse: str | Path, *, to: str, schema: str = "factorflow") -> dict[str, Any]:
    """Point the ``current_*`` views at an earlier kept model.

    The SQL it runs is ``UPDATE <schema>.current_pointer SET model_id = <to>
    WHERE name = 'current'`` (``include/sql/publish.sql``, ``rollback``).

    Raises:
        LookupError: ``to`` is not a kept model of this schema.
    """
    q = {k: v.format(schema=quote_identifier(schema)) for k, v in read_queries("publish.sql").items()
         if k in ("rollback", "model_exists")}
    with connect_for_write(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            (found,) = con.execute(q["model_exists"], {"model_id": to}).fetchone()
            if not found:
                raise LookupError(f"no kept model {to!r} in {warehouse} schema {schema}")
            con.execute(q["rollback"], {"model_id": to})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return {"warehouse": str(warehouse), "schema": schema, "current_model": to}


def _statements(sql: str) -> list[str]:
    """The ``;``-separated statements of one named query, comments dropped."""
    lines = (line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _check_id_types(con: Any, query: str, schema: str, user_type: Any, item_type: Any) -> None:
    """Fail clearly when a new model's id type differs from the published tables'."""
    expected = {("user_factors", "user_id"): _duckdb_type(user_type),
                ("item_factors", "item_id"): _duckdb_type(item_type)}
    for (table, column), want in expected.items():
        (have,) = con.execute(query, {"schema": schema, "table": table, "column": column}).fetchone()
        if have != want:
            raise ValueError(
                f"{schema}.{table}.{column} holds {have} ids but this model's ids are {want}: "
                "publish to another schema or migrate the table"
            )


def latest_result(warehouse: str | Path, *, schema: str = "factorflow",
                  user_id: Any = None, top_n: int = 5) -> dict[str, Any]:
    """The latest published model's metrics and one user's top recommendations.

    Args:
        warehouse: DuckDB database file.
        schema: schema the models were published to.
        user_id: the user to show; defaults to the smallest published user id.
        top_n: number of recommendations.

    Returns:
        ``{"model": {...run columns...}, "user_id": id, "recommendations": [{rank, item_id, score}]}``.
    """
    import duckdb

    q = {k: v.format(schema=quote_identifier(schema))
         for k, v in read_queries("latest_result.sql").items()}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        try:
            cursor = con.execute(q["latest_model"])
        except duckdb.CatalogException as exc:
            raise LookupError(f"no model published in {warehouse} schema {schema}") from exc
        row = cursor.fetchone()
        if row is None:
            raise LookupError(f"no model published in {warehouse} schema {schema}")
        model = dict(zip([d[0] for d in cursor.description], row))
        if user_id is None:
            (user_id,) = con.execute(q["first_user"], {"model_id": model["model_id"]}).fetchone()
        recs = con.execute(q["top_predictions"], {"model_id": model["model_id"],
                                                  "user_id": user_id, "top_n": top_n}).fetchall()
    return {"model": model, "user_id": user_id,
            "recommendations": [dict(zip(("rank", "item_id", "score"), r)) for r in recs]}


def materialize_recommendations(warehouse: str | Path, *, schema: str = "factorflow") -> dict[str, Any]:
    """Rebuild ``<schema>.recommendations_daily`` from ``current_predictions``.

    Returns:
        ``{"table": name, "rows": n}``.
    """
    sql = read_sql("recommendations_daily.sql").format(schema=quote_identifier(schema))
    with connect_for_write(warehouse) as con:
        con.execute(sql)
        (rows,) = con.execute(
            f"SELECT count(*) FROM {quote_identifier(schema)}.recommendations_daily").fetchone()
    return {"table": f"{schema}.recommendations_daily", "rows": int(rows)}
