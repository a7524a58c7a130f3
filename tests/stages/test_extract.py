"""Extract stage: a DuckDB or PostgreSQL table, or a Parquet/CSV file -> Parquet artifact."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from factorflow.stages.extract import extract_ratings

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


def _source_frame(small_warehouse):
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        return pl.from_arrow(con.sql("SELECT * FROM raw.ratings ORDER BY user_id, item_id")
                             .to_arrow_table())


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_a_parquet_or_csv_file_is_a_source_too(small_warehouse, tmp_path, suffix):
    source = _source_frame(small_warehouse)
    path = tmp_path / f"ratings.{suffix}"
    getattr(source.with_columns(secret=pl.lit("x")), f"write_{suffix}")(path)
    # the warehouse is not needed (nor opened) for a file source
    summary = extract_ratings(tmp_path / "unused.duckdb", str(path), tmp_path / "out")
    frame = pl.read_parquet(summary["path"]).sort("user_id", "item_id")
    assert summary["columns"] == ["user_id", "item_id", "rating", "rated_at"]
    assert frame.select("user_id", "item_id", "rating").equals(
        source.select("user_id", "item_id", "rating").with_columns(pl.col("rating").cast(frame["rating"].dtype)))
    assert not (tmp_path / "unused.duckdb").exists()
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        extract_ratings(tmp_path / "unused.duckdb", str(tmp_path / "missing.parquet"), tmp_path)


@pytest.mark.integration
def test_extract_from_postgres_keeps_types_and_rows(postgres_backend, small_warehouse, tmp_path):
    from factorflow.warehouse import open_warehouse

    source = _source_frame(small_warehouse).with_columns(
        user_id=pl.format("u-{}", pl.col("user_id")), secret=pl.lit("x"))
    table = f"{postgres_backend.schema}.ratings"
    open_warehouse(postgres_backend.target).replace_table(table, source.to_arrow())
    postgres_backend.execute("UPDATE {schema}.ratings SET rating = NULL WHERE item_id = ?",
                             int(source["item_id"][0]))
    summary = extract_ratings(postgres_backend.target, table, tmp_path)
    frame = pl.read_parquet(summary["path"]).sort("user_id", "item_id")
    assert summary["columns"] == ["user_id", "item_id", "rating", "rated_at"]
    assert summary["n_rows"] == source.height
    assert frame.schema["user_id"] == pl.String and frame.schema["item_id"] == pl.Int64
    assert frame.schema["rated_at"] == pl.Datetime("us")
    want = source.sort("user_id", "item_id")
    assert frame["user_id"].equals(want["user_id"]) and frame["rated_at"].equals(want["rated_at"])
    # NULLs stay NULL (validation must see them), other ratings unchanged
    nulls = frame.filter(pl.col("item_id") == source["item_id"][0])["rating"]
    assert nulls.null_count() == nulls.len() > 0
    with pytest.raises(ValueError, match="not found"):
        extract_ratings(postgres_backend.target, f"{postgres_backend.schema}.nope", tmp_path)


@pytest.mark.integration
def test_an_unreachable_postgres_is_one_clear_line(tmp_path):
    from factorflow.warehouse.base import WarehouseUnavailableError

    with pytest.raises(WarehouseUnavailableError, match=r"cannot connect to the PostgreSQL "
                       r"warehouse postgresql://nobody:\*\*\*@127.0.0.1:1/none"):
        extract_ratings("postgresql://nobody:secret@127.0.0.1:1/none", "raw.ratings", tmp_path)


def test_a_killed_attempts_temp_file_is_replaced(small_warehouse, tmp_path):
    """A leftover ``ratings.parquet.tmp`` (a try killed mid-write) is overwritten, never read."""
    import pyarrow.parquet as pq

    (tmp_path / "ratings.parquet.tmp").write_bytes(b"PAR1 half of a killed try's file")
    out = extract_ratings(small_warehouse, "raw.ratings", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ratings.parquet"]
    assert pq.read_metadata(out["path"]).num_rows == out["n_rows"] > 0
