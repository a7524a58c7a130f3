"""Publishing under a held write lock, and a publisher killed mid-transaction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest

from factorflow.warehouse import WarehouseLockedError, publish_model

pytestmark = pytest.mark.integration

TABLES = ("model_runs", "user_factors", "item_factors", "predictions")


def _snapshot(path):
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: sorted(con.execute(f"SELECT * FROM factorflow.{t}").fetchall(), key=repr)
                for t in TABLES}


def _publish(warehouse, small_model, model_id, **kw):
    return publish_model(warehouse, model_id=model_id, model_dir=small_model["model_dir"],
                         matrix_dir=small_model["matrix_dir"], **kw)


def _hold_lock(path, seconds):
    """Another process with an open read-write session on the file."""
    code = ("import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "time.sleep(float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_fails_clearly_naming_the_holder(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    _publish(wh, small_model, "m1")
    before = _snapshot(wh)
    holder = _hold_lock(wh, 30)
    try:
        started = time.monotonic()
        with pytest.raises(WarehouseLockedError, match=f"locked by another process.*PID {holder.pid}"):
            _publish(wh, small_model, "m2", lock_timeout=1.5)
        assert time.monotonic() - started < 15  # bounded backoff
    finally:
        holder.kill()
        holder.wait()
    assert _snapshot(wh) == before  # nothing half-written, file intact


def test_publish_waits_out_a_short_lock(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    _publish(wh, small_model, "m1")
    holder = _hold_lock(wh, 1.0)  # releases after a second
    try:
        _publish(wh, small_model, "m2", lock_timeout=30)
    finally:
        holder.wait()
    with duckdb.connect(str(wh), read_only=True) as con:
        assert con.execute("SELECT model_id FROM factorflow.current_model").fetchall() == [("m2",)]


KILL_CODE = """
import sys
from factorflow.warehouse import publish_model
print("start", flush=True)
publish_model(sys.argv[1], model_id=sys.argv[2], model_dir=sys.argv[3], matrix_dir=sys.argv[4])
print("done", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.8, 1.5])
def test_killing_the_publisher_leaves_old_or_new_never_a_mix(tmp_path, small_model, delay):
    wh = tmp_path / "wh.duckdb"
    _publish(wh, small_model, "m1")
    before = _snapshot(wh)
    proc = subprocess.Popen([sys.executable, "-c", KILL_CODE, str(wh), "m2",
                             str(small_model["model_dir"]), str(small_model["matrix_dir"])],
                            stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert proc.stdout.readline().strip() == "start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = _snapshot(wh)  # opens cleanly (the WAL replays or is discarded)
    ids = {r[0] for r in after["model_runs"]}
    if ids == {"m1"}:
        assert after == before, "a killed publish changed the previous model's rows"
    else:
        assert ids == {"m1", "m2"}
        for table in TABLES:  # m1 exactly as before, m2 complete
            assert [r for r in after[table] if r[0] == "m1"] == before[table]
        assert sum(1 for r in after["user_factors"] if r[0] == "m2") == len(before["user_factors"])
    with duckdb.connect(str(wh), read_only=True) as con:
        (current,) = con.execute("SELECT model_id FROM factorflow.current_model").fetchone()
    assert current in ids
