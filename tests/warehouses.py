"""Both warehouse back ends behind one test helper: a DuckDB file and PostgreSQL.

Tests that take the ``backend`` fixture run once per back end. The PostgreSQL
runs use the server at ``$FACTORFLOW_TEST_POSTGRES`` (default: this machine's,
127.0.0.1:5432, database ``test``), each test in its own schema, dropped after;
without a server they skip with a one-line reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any

PG_URI = os.environ.get("FACTORFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("model_runs", "user_factors", "item_factors", "predictions")


@lru_cache(maxsize=1)
def postgres_skip_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    try:
        import psycopg

        psycopg.connect(PG_URI, connect_timeout=3).close()
    except Exception as exc:  # no driver, no server, refused login
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return f"PostgreSQL not reachable at {PG_URI}: {lines[0]}"
    return None


class Backend:
    """One warehouse for one test: its target, schema, and read/write helpers.

    SQL given to :meth:`fetch` / :meth:`execute` uses ``{schema}`` for the
    quoted schema and ``?`` for bound values, whatever the back end.
    """

    def __init__(self, kind: str, target: Any, schema: str):
        self.kind, self.target, self.schema = kind, target, schema

    def _sql(self, sql: str) -> str:
        sql = sql.format(schema=f'"{self.schema}"')
        return sql.replace("?", "%s") if self.kind == "postgres" else sql

    def fetch(self, sql: str, *params: Any) -> list[tuple]:
        if self.kind == "duckdb":
            import duckdb

            with duckdb.connect(str(self.target), read_only=True) as con:
                return con.execute(self._sql(sql), list(params)).fetchall()
        import psycopg

        with psycopg.connect(PG_URI, autocommit=True) as con:
            return con.execute(self._sql(sql), list(params)).fetchall()

    def execute(self, sql: str, *params: Any) -> None:
        if self.kind == "duckdb":
            import duckdb

            with duckdb.connect(str(self.target)) as con:
                con.execute(self._sql(sql), list(params))
            return
        import psycopg

        with psycopg.connect(PG_URI, autocommit=True) as con:
            con.execute(self._sql(sql), list(params))

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every row of the four published tables, in a stable order."""
        return {t: sorted(self.fetch(f"SELECT * FROM {{schema}}.{t}"), key=repr) for t in TABLES}

    def count(self, table: str, model_id: str | None = None) -> int:
        where = "" if model_id is None else " WHERE model_id = ?"
        return self.fetch(f"SELECT count(*) FROM {{schema}}.{table}{where}",
                          *([] if model_id is None else [model_id]))[0][0]

    def current(self) -> list[str]:
        return [r[0] for r in self.fetch("SELECT model_id FROM {schema}.current_model")]

    def column_type(self, table: str, column: str) -> str:
        (kind,) = self.fetch("SELECT upper(data_type) FROM information_schema.columns "
                             "WHERE table_schema = ? AND table_name = ? AND column_name = ?",
                             self.schema, table, column)[0]
        return kind


def make_backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "duckdb":
        return Backend("duckdb", tmp_path / "wh.duckdb", "factorflow")
    return Backend("postgres", PG_URI, f"ff_test_{uuid.uuid4().hex[:12]}")


def drop_backend(backend: Backend) -> None:
    if backend.kind == "postgres":
        backend.execute("DROP SCHEMA IF EXISTS {schema} CASCADE")


def hold_duckdb_lock(path: Path, seconds: float = 600) -> subprocess.Popen:
    """Another process with an open read-write session on a DuckDB file for ``seconds``
    (returns once it holds the lock; kill it to release sooner)."""
    code = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def duckdb_snapshot(path: Path) -> dict:
    """Every table of the ``factorflow`` schema in a DuckDB file (see :meth:`Backend.snapshot`)."""
    return Backend("duckdb", path, "factorflow").snapshot()


def publish_small_model(target: Any, small_model: dict, model_id: str = "m1", **kwargs: Any):
    """Publish conftest's ``small_model`` as ``model_id`` into ``target`` (kwargs: publish_model's)."""
    from factorflow.stages.publish import publish_model

    return publish_model(target, model_id=model_id, model_dir=small_model["model_dir"],
                         matrix_dir=small_model["matrix_dir"], **kwargs)
