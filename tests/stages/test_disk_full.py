"""The disk filling during extract, build and publish: a real tmpfs, real stages.

Each stage must fail with a :class:`DiskFullError` naming the path it was
writing, the space that was free and what to do, leave no partial file, and (for
publish) leave the warehouse's previous model intact and readable. Mounting
needs root; elsewhere the tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from typing import Iterator

import duckdb
import numpy as np
import pytest

from factorflow.airflow.failures import classify, no_retry
from factorflow.engine.artifacts import DiskFullError
from tests.warehouses import duckdb_snapshot, publish_small_model

pytestmark = pytest.mark.integration

#: The tmpfs's size: small enough to fill in a second.
SIZE = "2m"
#: For publish: room for a DuckDB file holding one small model (about 2 MiB, in
#: 256 KiB blocks) and its WAL, then filled with a ballast file.
WAREHOUSE_SIZE = "16m"


@contextmanager
def _tmpfs(directory, size: str) -> Iterator[None]:
    """``directory`` on its own tmpfs of ``size`` for the block; skips unless root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the disk-full tests run as root only")
    directory.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(directory)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A directory under ``tmp_path`` on its own 2 MiB tmpfs, unmounted afterwards."""
    with _tmpfs(tmp_path / "small-disk", SIZE):
        yield tmp_path / "small-disk"


@pytest.fixture
def warehouse_disk(tmp_path):
    """A directory under ``tmp_path`` on its own 16 MiB tmpfs, unmounted afterwards."""
    with _tmpfs(tmp_path / "warehouse-disk", WAREHOUSE_SIZE):
        yield tmp_path / "warehouse-disk"


def _big_ratings(n: int = 400_000) -> str:
    """SQL of ``n`` random ratings of 2,000 users and 1,000 items: over 3 MB as Parquet
    (random values barely compress), and ``train.npz`` alone about 4 MB."""
    return (f"SELECT (random() * 2000)::BIGINT AS user_id, (random() * 1000)::BIGINT AS item_id, "
            f"1 + 4 * random() AS rating, TIMESTAMP '2024-01-01' + to_seconds(range) AS rated_at "
            f"FROM range({n})")


def _assert_clear(exc: DiskFullError, path, todo: str) -> None:
    """The message names the path, the free space and what to do; Airflow retries it."""
    text = str(exc)
    assert text.startswith(f"no space left on the device writing {path} (")
    assert " was free in " in text and todo in text, text
    assert classify(exc) == "disk" and no_retry(exc) is None


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class TestExtract:
    def test_a_table_bigger_than_the_disk(self, small_disk, tmp_path):
        from factorflow.stages.extract import RATINGS_FILE, extract_ratings

        warehouse = tmp_path / "wh.duckdb"
        with duckdb.connect(str(warehouse)) as con:
            con.execute(f"CREATE SCHEMA raw; CREATE TABLE raw.ratings AS {_big_ratings()}")
        out = small_disk / "extract"
        with pytest.raises(DiskFullError) as info:
            extract_ratings(warehouse, "raw.ratings", out)
        _assert_clear(info.value, out / RATINGS_FILE, "FACTORFLOW_ARTIFACTS_DIR")
        assert _leftovers(out) == []  # no ratings.parquet, no .tmp


class TestBuild:
    def test_matrices_that_do_not_fit(self, small_disk, tmp_path):
        from factorflow.stages.build import ITEMS_FILE, TRAIN_FILE, USERS_FILE, VALID_FILE, build_matrices

        ratings = tmp_path / "ratings.parquet"
        with duckdb.connect() as con:
            con.sql(_big_ratings()).write_parquet(str(ratings))
        out = small_disk / "matrix"
        with pytest.raises(DiskFullError) as info:
            build_matrices(ratings, out)
        _assert_clear(info.value, out / TRAIN_FILE, "FACTORFLOW_ARTIFACTS_DIR")
        # the id maps and the small validation split fitted, complete; no half train.npz
        # (nor its .tmp) and no matrix.json, so nothing reads this directory as built
        assert _leftovers(out) == sorted([USERS_FILE, ITEMS_FILE, VALID_FILE])


class TestPublish:
    def test_a_second_model_that_fills_the_disk(self, warehouse_disk, small_model):
        warehouse = warehouse_disk / "wh.duckdb"
        publish_small_model(warehouse, small_model, "m1")
        before = duckdb_snapshot(warehouse)
        _fill(warehouse_disk, leave=64 * 1024)
        with pytest.raises(DiskFullError) as info:
            publish_small_model(warehouse, small_model, "m2")
        _assert_clear(info.value, warehouse, "previous model is intact")
        # read while the disk is still full: a reader needs no room
        assert duckdb_snapshot(warehouse) == before
        with duckdb.connect(str(warehouse), read_only=True) as con:
            assert con.execute("SELECT model_id FROM factorflow.current_pointer").fetchall() == [
                ("m1",)]
        (warehouse_disk / "ballast").unlink()  # space freed: the retry publishes
        publish_small_model(warehouse, small_model, "m2")
        assert duckdb_snapshot(warehouse) != before


def _fill(directory, *, leave: int) -> None:
    """Fill ``directory``'s file system with a ``ballast`` file, leaving ``leave`` bytes."""
    free = shutil.disk_usage(directory).free
    with open(directory / "ballast", "wb") as out:
        out.write(np.zeros(max(free - leave, 0), np.uint8).tobytes())
