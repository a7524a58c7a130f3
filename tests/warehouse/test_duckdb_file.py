"""A warehouse path that holds something other than a DuckDB database this DuckDB opens:
one line saying what the file is, its bytes unchanged, not retried."""

from __future__ import annotations

import shutil
import struct

import duckdb
import pytest

from factorflow.airflow.failures import classify
from factorflow.stages.extract import extract_ratings
from factorflow.warehouse import open_warehouse
from factorflow.warehouse.base import WarehouseFileError
from tests.warehouses import publish_small_model

pytestmark = pytest.mark.integration


def _checksum(block: bytes) -> int:
    """DuckDB's checksum of a header block (the bytes after its 8-byte checksum field)."""
    result = 5381
    for (word,) in struct.iter_unpack("<Q", block):
        result ^= (word * 0xBF58476D1CE4E5B9) & 0xFFFF_FFFF_FFFF_FFFF
    return result


def _with_storage_version(path, version: int) -> None:
    """Rewrite a real DuckDB file's storage version field (and the header's checksum).

    No DuckDB of another storage version can be installed here, so a file
    written by this one is relabelled: DuckDB reads the version before anything else.
    """
    data = bytearray(path.read_bytes())
    assert data[8:12] == b"DUCK"
    data[12:20] = struct.pack("<Q", version)
    data[0:8] = struct.pack("<Q", _checksum(bytes(data[8:4096])))
    path.write_bytes(bytes(data))


@pytest.fixture
def not_duckdb(request, tmp_path, small_ratings_parquet, small_warehouse):
    """``(path, what the error must say)`` of one kind of wrong file."""
    kind = request.param
    path = tmp_path / "warehouse.duckdb"
    if kind == "text":
        path.write_text("user_id,item_id,rating\n1,2,4.0\n")
        return path, "is not a DuckDB database but a text file (starting 'user_id,item_id,rating')"
    if kind == "parquet":
        shutil.copy(small_ratings_parquet, path)
        return path, "is not a DuckDB database but a Parquet file"
    if kind == "empty":
        path.touch()
        return path, "is not a DuckDB database but an empty file (0 bytes)"
    shutil.copy(small_warehouse, path)
    _with_storage_version(path, 1000 if kind == "newer" else 39)
    version = 1000 if kind == "newer" else 39
    return path, (f"is a DuckDB file that DuckDB {duckdb.__version__} cannot open (Trying to "
                  f"read a database file with storage version number {version}")


KINDS = ["text", "parquet", "empty", "newer", "older"]


@pytest.mark.parametrize("not_duckdb", KINDS, indirect=True)
def test_publish_says_what_the_file_is_and_overwrites_nothing(not_duckdb, small_model):
    path, says = not_duckdb
    before = sorted(path.parent.iterdir()), path.read_bytes()
    with pytest.raises(WarehouseFileError) as info:
        publish_small_model(path, small_model, "m1", lock_timeout=1)
    message = str(info.value)
    assert message.startswith(f"warehouse {path} {says}") and "\n" not in message
    assert message.endswith("nothing was written to it")
    assert (sorted(path.parent.iterdir()), path.read_bytes()) == before  # no WAL, same bytes
    assert classify(info.value) == "deterministic"


@pytest.mark.parametrize("not_duckdb", ["text", "newer"], indirect=True)
def test_extract_and_reads_say_the_same(not_duckdb, tmp_path):
    path, says = not_duckdb
    before = path.read_bytes()
    with pytest.raises(WarehouseFileError, match=f"warehouse {path} is"):
        extract_ratings(path, "raw.ratings", tmp_path / "out")
    with pytest.raises(WarehouseFileError, match=f"warehouse {path} is"):
        open_warehouse(path).latest_result()
    assert path.read_bytes() == before
    assert not list((tmp_path / "out").iterdir())


def test_a_real_duckdb_file_still_opens(small_warehouse, tmp_path):
    """The relabelling above only changes the version: the same file unchanged opens."""
    path = tmp_path / "copy.duckdb"
    shutil.copy(small_warehouse, path)
    _with_storage_version(path, struct.unpack("<Q", path.read_bytes()[12:20])[0])
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.ratings").fetchone()[0] > 0
