"""Two DAGs publish to one schema at the same moment: both succeed, one after the other.

``factorize_ratings`` and ``tune_factorization`` run as two ``airflow dags test``
processes (each its own Airflow home and artifacts, one warehouse and schema).
The test holds the schema's write lock (DuckDB: a read-write session on the file;
PostgreSQL: the publishers' advisory lock) until both publishers wait for it,
then lets go: both start for the lock at once. The publish log lines that
bracket each publisher's hold show the two transactions never overlapped, and
the warehouse holds both models complete, ``current_model`` the later one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import ROOT, TEST_AIRFLOW_HOME
from tests.warehouses import PG_URI, Backend, hold_duckdb_lock

pytestmark = pytest.mark.integration

CONN_ID = "factorflow_concurrent_pg"
TOP_N = 5
#: Small, fast runs: one candidate in the sweep.
CONFS = {
    "factorize_ratings": {"rank": 4, "epochs": 10},
    "tune_factorization": {"space": {"rank": [4]}, "optimizer": "adam", "learning_rate": 0.05,
                           "epochs": 10},
}
TAKEN = re.compile(r"^(\S+) .*publish lock of .* taken after ([\d.]+) s; writing model (\S+)")
COMMITTING = re.compile(r"^(\S+) .*model (\S+) written to .*; committing")


def _start(dag_id: str, conf: dict, tmp_path: Path, env: dict[str, str]) -> tuple[Any, Path]:
    """``airflow dags test dag_id`` in the background, in its own Airflow home; its output file."""
    home = tmp_path / f"home-{dag_id}"
    home.mkdir()
    for name in ("airflow.db", "airflow.cfg"):
        if (TEST_AIRFLOW_HOME / name).exists():
            shutil.copy(TEST_AIRFLOW_HOME / name, home / name)
    env = {**os.environ, **env, "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
           "FACTORFLOW_ARTIFACTS_DIR": str(tmp_path / f"artifacts-{dag_id}"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = tmp_path / f"{dag_id}.log"
    airflow = Path(sys.executable).parent / "airflow"
    with open(out, "w") as sink:
        proc = subprocess.Popen([str(airflow), "dags", "test", dag_id, "-c", json.dumps(conf)],
                                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def _wait_until(condition: Callable[[], bool], procs: list, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert all(p.poll() is None for p in procs), f"a DAG process ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.2)


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _hold(log: str) -> tuple[str, float, datetime, datetime]:
    """One publisher's ``(model_id, seconds waited, lock taken, rows written)`` from its log."""
    taken = [m for line in log.splitlines() if (m := TAKEN.match(line))]
    written = [m for line in log.splitlines() if (m := COMMITTING.match(line))]
    assert len(taken) == len(written) == 1, log[-3000:]
    model_id = taken[0].group(3)
    assert written[0].group(2) == model_id
    return model_id, float(taken[0].group(2)), _stamp(taken[0].group(1)), _stamp(written[0].group(1))


def _run_both(tmp_path: Path, base_conf: dict, env: dict[str, str],
              waiting: Callable[[list[Path]], bool], release: Callable[[], None]) -> list[str]:
    """Both DAGs, their publishers released together once both wait; their logs."""
    started = [_start(dag_id, {**base_conf, **conf, "top_n": TOP_N, "min_rows": 1000},
                      tmp_path, env) for dag_id, conf in CONFS.items()]
    procs, outs = [p for p, _ in started], [o for _, o in started]
    try:
        _wait_until(lambda: waiting(outs), procs, "two publishers waiting for the lock", 120)
        release()
        for proc in procs:
            proc.wait(timeout=90)
    finally:
        release()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logs = [out.read_text() for out in outs]
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
        assert re.search(r"DagRun Finished: .*state=success", log), log[-3000:]
    return logs


def _assert_serialized_and_complete(wh: Backend, logs: list[str]) -> None:
    first, second = sorted((_hold(log) for log in logs), key=lambda hold: hold[2])
    assert first[3] < second[2], f"publish transactions overlapped: {first} {second}"

    models = wh.fetch("SELECT model_id, dag_id, n_users, n_items FROM {schema}.model_runs "
                      "WHERE candidate_of IS NULL ORDER BY model_id")
    assert {m[0] for m in models} == {first[0], second[0]}
    assert {m[1] for m in models} == set(CONFS)
    for model_id, _, n_users, n_items in models:
        assert wh.count("user_factors", model_id) == n_users
        assert wh.count("item_factors", model_id) == n_items
        # top_n per user (users whose every rating fell in validation have none)
        [(rows, users)] = wh.fetch("SELECT count(*), count(DISTINCT user_id) "
                                   "FROM {schema}.predictions WHERE model_id = ?", model_id)
        assert rows == users * TOP_N and users > 0.95 * n_users
    tuned = next(m[0] for m in models if m[1] == "tune_factorization")
    assert wh.fetch("SELECT count(*) FROM {schema}.model_runs WHERE candidate_of = ?",
                    tuned) == [(1,)]
    # the later commit is current, and every current_* view shows all of its rows
    assert wh.current() == [second[0]]
    n_users = next(m[2] for m in models if m[0] == second[0])
    assert wh.count("current_user_factors") == n_users
    assert wh.count("current_predictions") == wh.count("predictions", second[0])


def test_on_duckdb(small_ratings_parquet, tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    holder = hold_duckdb_lock(warehouse)

    def waiting(outs: list[Path]) -> bool:
        return all("is locked" in out.read_text() for out in outs)

    def release() -> None:
        if holder.poll() is None:
            holder.kill()
        holder.wait()

    conf = {"warehouse": str(warehouse), "source_table": str(small_ratings_parquet)}
    logs = _run_both(tmp_path, conf, {}, waiting, release)
    _assert_serialized_and_complete(Backend("duckdb", warehouse, "factorflow"), logs)


def test_on_postgres(small_ratings_parquet, postgres_backend, tmp_path):
    import psycopg

    pg = postgres_backend
    key = "hashtextextended('factorflow.publish:' || %s, 0)"
    gate = psycopg.connect(PG_URI)
    gate.execute(f"SELECT pg_advisory_xact_lock({key})", [pg.schema])

    def waiting(outs: list[Path]) -> bool:  # noqa: ARG001
        [(n,)] = pg.fetch("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                          f"AND NOT granted AND (classid::bigint << 32) | objid::bigint = {key}"
                          .replace("%s", "?"), pg.schema)
        return n == 2

    def release() -> None:
        if not gate.closed:
            gate.commit()
            gate.close()

    env = {f"AIRFLOW_CONN_{CONN_ID.upper()}": PG_URI.replace("postgresql://", "postgres://")}
    conf = {"warehouse_conn_id": CONN_ID, "schema": pg.schema,
            "source_table": str(small_ratings_parquet)}
    logs = _run_both(tmp_path, conf, env, waiting, release)
    _assert_serialized_and_complete(pg, logs)
