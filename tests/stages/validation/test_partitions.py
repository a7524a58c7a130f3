"""Hash partitions of a Parquet table: equal keys meet, rows keep their numbers and order."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorflow.stages.validation.partitions import ROW, partition_parquet, read_part

pytestmark = pytest.mark.unit


def parts(tmp_path, table: pa.Table, **kwargs) -> list[pa.Table]:
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=7)
    out = tmp_path / "parts"
    out.mkdir()
    files = partition_parquet(tmp_path / "t.parquet", out, **kwargs)
    return [read_part(f) for f in files]


def test_equal_keys_meet_and_every_row_comes_once_in_file_order(tmp_path):
    n = 200
    table = pa.table({"user_id": [i % 13 for i in range(n)],
                      "item_id": [f"i{i % 7}" if i % 11 else None for i in range(n)],
                      "rating": [float(i) for i in range(n)], "extra": list(range(n))})
    got = parts(tmp_path, table, columns=["user_id", "item_id", "rating"],
                key=["user_id", "item_id"], n_parts=6, read_rows=16)
    assert 1 < len(got) <= 6
    assert all(t.column_names == ["user_id", "item_id", "rating", ROW] for t in got)
    rows = [r for t in got for r in t[ROW].to_pylist()]
    assert sorted(rows) == list(range(n))
    for t in got:  # each part in file order, each row with its own values
        assert t[ROW].to_pylist() == sorted(t[ROW].to_pylist())
        assert t["rating"].to_pylist() == [float(r) for r in t[ROW].to_pylist()]
    where = {}
    for k, t in enumerate(got):
        for key in zip(t["user_id"].to_pylist(), t["item_id"].to_pylist()):
            assert where.setdefault(key, k) == k  # nulls included


def test_no_key_still_splits(tmp_path):
    table = pa.table({"rating": [1.0] * 50})
    got = parts(tmp_path, table, columns=["rating"], key=[], n_parts=4)
    assert sum(t.num_rows for t in got) == 50 and len(got) > 1


def test_an_empty_file_gives_one_empty_part_with_the_schema(tmp_path):
    table = pa.table({"user_id": pa.array([], pa.int64()), "rating": pa.array([], pa.float32())})
    (got,) = parts(tmp_path, table, columns=["user_id", "rating"], key=["user_id"], n_parts=3)
    assert got.num_rows == 0
    assert got.schema == pa.schema([("user_id", pa.int64()), ("rating", pa.float32()),
                                    (ROW, pa.int64())])


def test_n_parts_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="n_parts"):
        parts(tmp_path, pa.table({"a": [1]}), columns=["a"], key=["a"], n_parts=0)
