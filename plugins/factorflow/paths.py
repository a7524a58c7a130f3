"""Where the project's non-Python assets (SQL, expectation suites) live."""

from __future__ import annotations

import os
from pathlib import Path

#: ``include/`` beside ``plugins/`` in a checkout (and in the Airflow image,
#: where both are mounted side by side). ``FACTORFLOW_INCLUDE_DIR`` overrides.
INCLUDE_DIR = Path(
    os.environ.get("FACTORFLOW_INCLUDE_DIR", Path(__file__).resolve().parents[2] / "include")
)


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
