"""Publishing under a held write lock, and a publisher killed mid-transaction
(the kill test and the lock tests run on both back ends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from factorflow.warehouse.base import WarehouseLockedError
from tests.warehouses import (
    TABLES,
    Backend,
    duckdb_snapshot,
    hold_duckdb_lock,
    publish_small_model,
)

pytestmark = pytest.mark.integration


def test_a_held_lock_fails_clearly_naming_the_holder(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    publish_small_model(wh, small_model, "m1")
    before = duckdb_snapshot(wh)
    holder = hold_duckdb_lock(wh, 30)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError, match=f"locked by another process.*PID {holder.pid}"):
            publish_small_model(wh, small_model, "m2", lock_timeout=1.5)
        assert time.monotonic() - started < 15  # bounded backoff
    finally:
        holder.kill()
        holder.wait()
    assert duckdb_snapshot(wh) == before  # nothing half-written, file intact


def test_publish_waits_out_a_short_lock(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    publish_small_model(wh, small_model, "m1")
    holder = hold_duckdb_lock(wh, 1.0)  # releases after a second
    try:
        publish_small_model(wh, small_model, "m2", lock_timeout=30)
    finally:
        holder.wait()
    assert Backend("duckdb", wh, "factorflow").current() == ["m2"]


def _hold_pg_lock(backend, seconds=None):
    """Another session holding the schema's publish lock (released after ``seconds``)."""
    import psycopg

    from tests.warehouses import PG_URI

    con = psycopg.connect(PG_URI, autocommit=True)
    con.execute("SELECT pg_advisory_lock(hashtextextended('factorflow.publish:' || %s, 0))",
                [backend.schema])
    if seconds is not None:
        threading.Timer(seconds, con.close).start()
    return con


def test_postgres_a_held_lock_fails_clearly_naming_the_holder(postgres_backend, small_model):
    backend = postgres_backend
    publish_small_model(backend.target, small_model, "m1", schema=backend.schema)
    before = backend.snapshot()
    holder = _hold_pg_lock(backend)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError, match=f"held by PID {holder.info.backend_pid} "):
            publish_small_model(backend.target, small_model, "m2", schema=backend.schema, lock_timeout=1.5)
        assert time.monotonic() - started < 15
    finally:
        holder.close()
    assert backend.snapshot() == before
    _hold_pg_lock(backend, seconds=1.0)  # a short hold is waited out
    publish_small_model(backend.target, small_model, "m2", schema=backend.schema, lock_timeout=30)
    assert backend.current() == ["m2"]


KILL_CODE = """
import sys
from contextlib import contextmanager
from factorflow.stages.publish import publish_model
from factorflow.warehouse import open_warehouse

target, model_id, model_dir, matrix_dir, schema, pause_at, keep = sys.argv[1:8]


def pause(where):
    if where == pause_at:  # tell the test, then wait inside the open transaction for SIGKILL
        print("paused", flush=True)
        sys.stdin.read()


class Paused(type(open_warehouse(target))):
    # the real back end, its publish stopping at one point inside its transaction
    def _insert(self, cur, sql, model_id, rows):
        super()._insert(cur, sql, model_id, rows)
        pause("first insert")

    @contextmanager
    def _publish_session(self, schema, lock_timeout):
        with super()._publish_session(schema, lock_timeout) as cur:
            yield cur
            pause("before commit")  # every statement run, old model deleted, not committed


print("start", flush=True)
publish_model(Paused(target), model_id=model_id, model_dir=model_dir, matrix_dir=matrix_dir,
              schema=schema, keep=int(keep))
print("done", flush=True)
"""


def _start_publisher(backend, small_model, model_id, pause_at="", keep=5):
    """A separate process publishing ``model_id``; it prints "start" first, then "paused"
    when it reaches ``pause_at`` ("first insert" or "before commit") and waits there."""
    return subprocess.Popen([sys.executable, "-c", KILL_CODE, str(backend.target), model_id,
                             str(small_model["model_dir"]), str(small_model["matrix_dir"]),
                             backend.schema, pause_at, str(keep)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env={**os.environ})


@pytest.mark.parametrize("pause_at", ["first insert", "before commit"])
def test_a_publisher_killed_inside_its_transaction_leaves_the_old_model(backend, small_model,
                                                                         pause_at):
    """Deterministic on both back ends: SIGKILL while the transaction is open (with keep=1,
    so the uncommitted transaction has already deleted the old model), then the retry."""
    publish_small_model(backend.target, small_model, "m1", schema=backend.schema)
    before = backend.snapshot()
    proc = _start_publisher(backend, small_model, "m2", pause_at, keep=1)
    try:
        assert proc.stdout.readline().strip() == "start"
        assert proc.stdout.readline().strip() == "paused", "the publisher never paused"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert backend.snapshot() == before  # DuckDB: the uncommitted WAL is discarded
    assert backend.current() == ["m1"]
    publish_small_model(backend.target, small_model, "m2", schema=backend.schema, keep=1)
    assert backend.current() == ["m2"]  # the retry completes
    assert {r[0] for r in backend.snapshot()["model_runs"]} == {"m2"}


def test_postgres_publisher_killed_inside_its_transaction_changes_nothing(postgres_backend,
                                                                          small_model):
    """Deterministic: SIGKILL once the publisher holds its transaction's lock."""
    backend = postgres_backend
    publish_small_model(backend.target, small_model, "m1", schema=backend.schema)
    before = backend.snapshot()
    proc = _start_publisher(backend, small_model, "m2")
    held = ("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
            "(classid::bigint << 32) | objid::bigint = "
            "hashtextextended('factorflow.publish:' || ?, 0)")
    try:
        deadline = time.monotonic() + 60
        while not backend.fetch(held, backend.schema)[0][0]:
            assert proc.poll() is None, "the publisher finished before it was seen publishing"
            assert time.monotonic() < deadline
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert backend.snapshot() == before
    assert backend.current() == ["m1"]


def test_postgres_publish_does_not_wait_for_readers(postgres_backend, small_model):
    """An analyst's open transaction on the current_* views does not block a publish."""
    import psycopg

    from tests.warehouses import PG_URI

    backend = postgres_backend
    publish_small_model(backend.target, small_model, "m1", schema=backend.schema)
    with psycopg.connect(PG_URI) as reader:  # a transaction that stays open
        reader.execute(f'SELECT count(*) FROM "{backend.schema}".current_predictions').fetchone()
        reader.execute(f'SELECT * FROM "{backend.schema}".current_model').fetchall()
        publish_small_model(backend.target, small_model, "m2", schema=backend.schema, lock_timeout=3)
        # the reader's snapshot-independent view of the pointer moves on after commit
        assert backend.current() == ["m2"]
        reader.rollback()
