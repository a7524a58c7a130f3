"""Warehouse targets from Airflow connections (the glue between hooks and the library).

A DAG names its warehouse by an Airflow connection id, or leaves it empty to
use the DuckDB file given as a path. Postgres connections go through the
Postgres provider's hook (its ``get_conn`` opens each session); DuckDB
connections (``apache-airflow-providers-duckdb``) keep the file in ``host``.
"""

from __future__ import annotations

from typing import Any

POSTGRES_TYPES = ("postgres", "postgresql")


def warehouse_target(warehouse: str, conn_id: str | None) -> Any:
    """What the library's ``warehouse`` argument should be for this task.

    Args:
        warehouse: DuckDB file, used when ``conn_id`` is empty.
        conn_id: an Airflow connection id of type ``postgres`` or ``duckdb``.

    Returns:
        The DuckDB path, or a :class:`factorflow.warehouse.postgres_targets.PostgresTarget`.

    Raises:
        ValueError: the connection has another type, or a DuckDB one no file.
    """
    if not conn_id:
        return warehouse
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if conn.conn_type in POSTGRES_TYPES:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from factorflow.warehouse.postgres_targets import PostgresTarget

        hook = PostgresHook(postgres_conn_id=conn_id)
        where = f"{conn.host or 'localhost'}:{conn.port or 5432}/{conn.schema or ''}"
        return PostgresTarget(connect=hook.get_conn, name=f"connection {conn_id} ({where})")
    if conn.conn_type == "duckdb":
        if not conn.host:
            raise ValueError(f"DuckDB connection {conn_id!r} names no database file (host)")
        return conn.host
    raise ValueError(f"connection {conn_id!r} has type {conn.conn_type!r}; a factorflow "
                     f"warehouse is a postgres or duckdb connection")


def describe(target: Any) -> str:
    """The target as logs and XCom may show it (no credentials)."""
    return getattr(target, "name", None) or str(target)
