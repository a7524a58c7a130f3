"""A table whose ratings are text stops the real DAG at validate, once, publishing nothing.

The message itself is tested in tests/stages/validation/test_column_types.py.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import duckdb
import pytest

from tests.dags.helpers import load_dags, task_states

pytestmark = pytest.mark.integration

N = 10_000


def test_the_dag_stops_at_validate_once_and_publishes_nothing(tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute("CREATE TABLE raw.ratings AS SELECT i AS user_id, i % 97 AS item_id, "
                    "CASE WHEN i = 4321 THEN 'five' ELSE CAST(1 + i % 5 AS VARCHAR) END AS rating "
                    f"FROM range({N}) t(i)")
    digest = hashlib.sha256(warehouse.read_bytes()).hexdigest()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
        dag = load_dags()["factorize_ratings"]
        for task in dag.tasks:
            task.retry_delay = timedelta(seconds=1)
        run = dag.test(run_conf={"warehouse": str(warehouse), "source_table": "raw.ratings",
                                 "warehouse_conn_id": None, "min_rows": 1})
    states = task_states(run)
    assert states["extract"] == "success" and states["validate"] == "failed", states
    assert all(states[t] == "upstream_failed" for t in ("build", "train", "publish")), states
    assert {ti.task_id: ti.try_number for ti in run.get_task_instances()}["validate"] == 1
    assert dag.task_dict["validate"].retries > 0  # configured, yet not used
    assert hashlib.sha256(warehouse.read_bytes()).hexdigest() == digest
    assert not list((tmp_path / "artifacts").rglob("matrix"))
