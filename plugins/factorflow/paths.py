"""Where the project's non-Python assets (SQL, expectation suites) live."""

from __future__ import annotations

import os
from pathlib import Path

#: The checkout (or the Airflow home, where dags/, plugins/, include/ sit side by side).
PROJECT_DIR = Path(__file__).resolve().parents[2]

#: ``include/`` beside ``plugins/``; ``FACTORFLOW_INCLUDE_DIR`` overrides.
INCLUDE_DIR = Path(os.environ.get("FACTORFLOW_INCLUDE_DIR", PROJECT_DIR / "include"))



def default_warehouse() -> str:
    """``$FACTORFLOW_WAREHOUSE``, else ``data/warehouse.duckdb`` in the project (read per call)."""
    return os.environ.get("FACTORFLOW_WAREHOUSE", str(PROJECT_DIR / "data" / "warehouse.duckdb"))


def default_artifacts_dir() -> str:
    """``$FACTORFLOW_ARTIFACTS_DIR``, else ``data/artifacts`` in the project (read per call)."""
    return os.environ.get("FACTORFLOW_ARTIFACTS_DIR", str(PROJECT_DIR / "data" / "artifacts"))


def sql_path(name: str) -> Path:
    """Path of ``include/sql/<name>``; raises FileNotFoundError naming it."""
    path = INCLUDE_DIR / "sql" / name
    if not path.is_file():
        raise FileNotFoundError(f"SQL file not found: {path} (set FACTORFLOW_INCLUDE_DIR?)")
    return path


def read_sql(name: str) -> str:
    """Text of ``include/sql/<name>``."""
    return sql_path(name).read_text()


def expectation_suite_path(name: str) -> Path:
    """Path of ``include/expectations/<name>``."""
    path = INCLUDE_DIR / "expectations" / name
    if not path.is_file():
        raise FileNotFoundError(f"expectation suite not found: {path}")
    return path


def read_queries(name: str) -> dict[str, str]:
    """Named statements of ``include/sql/<name>``.

    A file holds a family of statements, each introduced by a ``-- name: NAME``
    line; the text up to the next such line is that statement.
    """
    queries: dict[str, str] = {}
    current: str | None = None
    for line in read_sql(name).splitlines():
        if line.startswith("-- name:"):
            current = line.split(":", 1)[1].strip()
            queries[current] = ""
        elif current is not None:
            queries[current] += line + "\n"
    return {k: v.strip() for k, v in queries.items()}
