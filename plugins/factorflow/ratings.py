"""Extract: the warehouse's ratings table into a Parquet artifact via DuckDB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factorflow.identifiers import quote_table
from factorflow.paths import read_sql

RATINGS_FILE = "ratings.parquet"


def extract_ratings(warehouse: str | Path, source_table: str, out_dir: str | Path) -> dict[str, Any]:
    """Copy ``source_table`` of a DuckDB warehouse into ``out_dir/ratings.parquet``.

    The warehouse is opened read-only, so extracting never changes it.

    Args:
        warehouse: DuckDB database file.
        source_table: ``schema.table`` (validated against a strict identifier pattern).
        out_dir: directory for the artifact; created if needed.

    Returns:
        ``{"path": str, "n_rows": int, "columns": [...]}`` — JSON-safe.

    Raises:
        FileNotFoundError: the warehouse file does not exist.
        ValueError: the table name is not a plain identifier, or the table is missing.
    """
    import duckdb

    warehouse = Path(warehouse)
    if not warehouse.is_file():
        raise FileNotFoundError(f"warehouse file not found: {warehouse}")
    query = read_sql("extract_ratings.sql").format(source=quote_table(source_table))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RATINGS_FILE
    tmp = path.with_suffix(".parquet.tmp")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        try:
            relation = con.sql(query)
        except duckdb.CatalogException as exc:
            raise ValueError(
                f"source table {source_table!r} not found in {warehouse}: {exc}"
            ) from exc
        columns = relation.columns
        relation.write_parquet(str(tmp))
        (n_rows,) = con.execute("SELECT count(*) FROM read_parquet(?)", [str(tmp)]).fetchone()
    tmp.replace(path)  # readers never see a half-written artifact
    return {"path": str(path), "n_rows": int(n_rows), "columns": list(columns)}
