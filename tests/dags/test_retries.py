"""Retries only where another try can help: real ``dag.test()`` runs with retries configured.

A train conf whose loss diverges, or one the engine refuses although the form's
schema allows it, fails after one try, with a message saying what to change
(out of memory is classified the same way: tests/airflow/test_failures.py with
real XLA and NumPy allocation failures, tests/stages/test_train.py
with the engine's own); a DuckDB file locked by another process and a
PostgreSQL server that refuses connections are retried (and a retry succeeds
once the lock is gone).
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest

from tests.dags.helpers import load_dags, task_states
from tests.warehouses import hold_duckdb_lock

pytestmark = pytest.mark.integration

RETRIES = 2  # the DAGs' default_args
# Every run names every field it relies on: dag.test() keeps a run's Params in
# the DAG's own Param objects, so a field left out keeps the previous run's value.
CONF = {"source_table": "raw.ratings", "rank": 8, "epochs": 10, "top_n": 5, "min_rows": 1000,
        "optimizer": "adam", "learning_rate": 0.05, "patience": None, "restarts": 1,
        "warehouse_conn_id": None,
        # previous_model would wait out the same lock: these tests are about extract's
        "warm_start": False}
PG_CONN_ID = "factorflow_test_refused"


@pytest.fixture(scope="module")
def dag(tmp_path_factory):
    """factorize_ratings with its retries, the delay between them cut to a second."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path_factory.mktemp("artifacts")))
        # nothing listens on port 1: every connection is refused
        mp.setenv(f"AIRFLOW_CONN_{PG_CONN_ID.upper()}", "postgres://postgres@127.0.0.1:1/test")
        dag = load_dags()["factorize_ratings"]
        for task in dag.tasks:
            assert task.retries == RETRIES
            task.retry_delay = timedelta(seconds=1)
        yield dag


@pytest.fixture
def warehouse(small_warehouse, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(small_warehouse, path)
    return path


def _tries(dag_run) -> dict[str, int]:
    return {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}


def _output(capfd) -> str:
    out = capfd.readouterr()
    return out.out + out.err


@pytest.mark.parametrize("conf, message", [
    ({"optimizer": "sgd", "learning_rate": 10.0}, "training diverged at epoch"),
    ({"optimizer": "gibbs", "restarts": 2}, "optimizer 'gibbs' does not take restarts"),
], ids=["loss-diverges", "engine-refuses-a-setting"])
def test_a_deterministic_train_failure_fails_after_one_try(dag, warehouse, conf, message, capfd):
    run = dag.test(run_conf={**CONF, "warehouse": str(warehouse), **conf})
    states = task_states(run)
    assert states["train"] == "failed" and states["publish"] == "upstream_failed", states
    assert _tries(run)["train"] == 1  # with 2 retries configured
    log = _output(capfd)
    assert message in log and "not retried: the same inputs would fail the same way" in log


def test_a_locked_warehouse_is_retried_and_a_retry_succeeds_once_it_is_free(dag, warehouse, capfd):
    holder = hold_duckdb_lock(warehouse)
    extract = dag.task_dict["extract"]

    def release(context):  # runs between the failed try and the retry
        holder.kill()
        holder.wait()

    before, extract.on_retry_callback = extract.on_retry_callback, [release]
    try:
        run = dag.test(run_conf={**CONF, "warehouse": str(warehouse)})
    finally:
        extract.on_retry_callback = before
        holder.kill()
        holder.wait()
    assert str(run.state) == "success", task_states(run)
    assert _tries(run)["extract"] == 2
    log = _output(capfd)
    assert "Could not set lock on file" in log  # DuckDB's words, quoted: who holds the lock
    assert "WarehouseLockedError may not recur: the task's retries apply" in log


def test_a_lock_held_through_every_try_fails_after_all_of_them(dag, warehouse):
    holder = hold_duckdb_lock(warehouse)
    try:
        run = dag.test(run_conf={**CONF, "warehouse": str(warehouse)})
    finally:
        holder.kill()
        holder.wait()
    states = task_states(run)
    assert states["extract"] == "failed" and states["publish"] == "upstream_failed"
    assert _tries(run)["extract"] == 1 + RETRIES


def test_a_refused_connection_is_retried(dag, warehouse, capfd):
    run = dag.test(run_conf={**CONF, "warehouse": str(warehouse), "warehouse_conn_id": PG_CONN_ID})
    assert task_states(run)["extract"] == "failed"
    assert _tries(run)["extract"] == 1 + RETRIES
    assert "cannot connect to the PostgreSQL warehouse" in _output(capfd)
