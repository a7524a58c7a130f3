"""Extract: the source ratings into a Parquet artifact.

The source is a table of the warehouse (a DuckDB file, or PostgreSQL), read by
its back end, or a Parquet/CSV file (or glob) that DuckDB reads directly,
whatever the warehouse.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any

from factorflow.engine.artifacts import replacing
from factorflow.warehouse import open_warehouse
from factorflow.warehouse.duckdb import copy_ratings

RATINGS_FILE = "ratings.parquet"
#: A source that is a file path rather than a table: DuckDB's reader for it.
FILE_READERS = {r"\.parquet$": "read_parquet", r"\.(csv|tsv|txt)(\.gz|\.zst)?$": "read_csv"}


def file_reader(source: str) -> str | None:
    """DuckDB's table function for a Parquet/CSV path, or None for a table name."""
    for pattern, reader in FILE_READERS.items():
        if re.search(pattern, source, re.IGNORECASE):
            return reader
    return None


def extract_ratings(warehouse: Any, source_table: str, out_dir: str | Path) -> dict[str, Any]:
    """Copy the source ratings into ``out_dir/ratings.parquet``.

    The warehouse is opened read-only, so extracting never changes it. Only the
    columns ``user_id, item_id, rating, rated_at`` are kept; a missing required
    one is reported by the validate stage's expectation suite.

    Args:
        warehouse: DuckDB database file, or a PostgreSQL target
            (``postgresql://`` URI or :class:`factorflow.warehouse.postgres_targets.PostgresTarget`).
        source_table: ``schema.table`` (validated against a strict identifier
            pattern), or a ``.parquet``/``.csv``/``.tsv`` path or glob, read by
            DuckDB whatever the warehouse.
        out_dir: directory for the artifact; created if needed.

    Returns:
        ``{"path": str, "n_rows": int, "columns": [...]}`` — JSON-safe.

    Raises:
        FileNotFoundError: the warehouse file or the source file does not exist.
        ValueError: the table name is not a plain identifier, or the table is missing.
        DiskFullError: ``ratings.parquet`` did not fit in ``out_dir``'s file system
            (the message names it and the space that was free); no partial file is left.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RATINGS_FILE
    reader = file_reader(source_table)
    if reader is not None and not glob.glob(source_table):
        raise FileNotFoundError(f"source file not found: {source_table}")
    # written beside the artifact and renamed over it: readers, and the next try of
    # a killed one, never see a half-written file
    with replacing(path) as tmp:
        if reader is None:
            open_warehouse(warehouse).extract_ratings(source_table, tmp)
        else:
            copy_ratings(":memory:", f"{reader}($path)", tmp, params={"path": source_table})
        meta = pq.read_metadata(tmp)  # the footer alone: rows and columns, no scan
    n_rows, columns = meta.num_rows, meta.schema.to_arrow_schema().names
    return {"path": str(path), "n_rows": int(n_rows), "columns": columns}
