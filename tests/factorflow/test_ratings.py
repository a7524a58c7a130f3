"""Extract stage: DuckDB table -> Parquet artifact."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from factorflow.ratings import extract_ratings

pytestmark = pytest.mark.unit


def test_extract_keeps_rating_columns_and_rows(small_warehouse, tmp_path):
    summary = extract_ratings(small_warehouse, "raw.ratings", tmp_path)
    frame = pl.read_parquet(summary["path"])
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        (n,) = con.execute("SELECT count(*) FROM raw.ratings").fetchone()
    assert summary["n_rows"] == n == frame.height
    assert frame.columns == ["user_id", "item_id", "rating", "rated_at"]
    assert not list(tmp_path.glob("*.tmp"))


def test_extra_columns_are_dropped_and_missing_ones_left_to_validation(tmp_path):
    wh = tmp_path / "wh.duckdb"
    with duckdb.connect(str(wh)) as con:
        con.execute("CREATE TABLE r AS SELECT 1 AS user_id, 2 AS rating, 'x' AS secret")
    summary = extract_ratings(wh, "r", tmp_path / "out")
    assert summary["columns"] == ["user_id", "rating"]


def test_missing_table_is_named(small_warehouse, tmp_path):
    with pytest.raises(ValueError, match="raw.nope"):
        extract_ratings(small_warehouse, "raw.nope", tmp_path)


def test_missing_warehouse_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.duckdb"):
        extract_ratings(tmp_path / "nowhere.duckdb", "raw.ratings", tmp_path)


@pytest.mark.parametrize("name", ["raw.ratings; DROP TABLE raw.ratings", 'raw."ratings"',
                                  "raw.ratings--", "a.b.c", "räw.ratings", ""])
def test_hostile_table_names_are_refused(small_warehouse, tmp_path, name):
    with pytest.raises(ValueError, match="invalid"):
        extract_ratings(small_warehouse, name, tmp_path)
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.ratings").fetchone()[0] > 0
