"""A real CeleryExecutor deployment on this machine: PostgreSQL metadata, Redis broker,
api-server, scheduler, dag-processor, a worker on `default` and one on `gpu`.

The run is triggered through the REST API exactly as the UI's trigger button
does (POST .../dagRuns with a conf and a user's token); `train` must run on the
gpu worker and nothing else there. Every process is stopped by process group.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import SMALL_DEMO

pytestmark = pytest.mark.integration

DAG_ID = "factorize_ratings"
CONF = {"rank": 8, "epochs": 20, "top_n": 5, "min_rows": 1000}
WORKERS = {"default_worker": "default", "gpu_worker": "gpu"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from factorflow.warehouse.demo import write_demo_warehouse
    from tests.stack import running_stack

    root = tmp_path_factory.mktemp("celery")
    warehouse = root / "warehouse.duckdb"
    write_demo_warehouse(warehouse, **SMALL_DEMO)
    started = time.monotonic()
    env = {"FACTORFLOW_WAREHOUSE": str(warehouse), "FACTORFLOW_ARTIFACTS_DIR": str(root / "artifacts")}
    with running_stack(root / "airflow", env, workers=WORKERS, dags=(DAG_ID,)) as stack:
        stack.warehouse = warehouse
        stack.startup_seconds = time.monotonic() - started
        yield stack


def _runs(stack):
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")
    assert status == 200, body
    return body["dag_runs"]


def test_anonymous_requests_are_refused(stack):
    status, _ = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                              {"logical_date": None, "conf": CONF}, token=None)
    assert status in (401, 403)
    assert _runs(stack) == []


@pytest.mark.parametrize("conf,field", [({"rank": 0}, "rank"), ({"optimizer": "newton9"}, "optimizer"),
                                        ({"source_table": "x; DROP TABLE y"}, "source_table")])
def test_a_bad_conf_is_rejected_before_any_task_runs(stack, conf, field):
    status, body = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                 {"logical_date": None, "conf": conf})
    assert status == 400, body
    assert f"param {field}" in str(body["detail"]), body
    assert _runs(stack) == []  # no run, so no task


def test_a_triggered_run_trains_on_the_gpu_worker(stack):
    started = time.monotonic()
    status, run = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                {"dag_run_id": "it-celery", "logical_date": None, "conf": CONF})
    assert status == 200, run
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/it-celery"

    def finished():
        body = stack.request("GET", path)[1]
        return body if body["state"] in ("success", "failed") else None

    final = stack.wait_for(finished, 600, "the run to finish")
    seconds = time.monotonic() - started
    status, body = stack.request("GET", f"{path}/taskInstances")
    tis = {ti["task_id"]: ti for ti in body["task_instances"]}
    assert final["state"] == "success", (
        {t: ti["state"] for t, ti in tis.items()}, stack.tail("gpu_worker"), stack.tail("scheduler"))
    assert set(tis) == {"extract", "validate", "build", "train", "publish"}
    assert tis["train"]["queue"] == "gpu"
    assert all(ti["queue"] != "gpu" for t, ti in tis.items() if t != "train")

    # which worker ran what: each task's Celery id, in the worker that received it
    import psycopg

    from tests.stack import PG_ADMIN

    with psycopg.connect(f"{PG_ADMIN.rsplit('/', 1)[0]}/{stack.database}") as con:
        celery_ids = dict(con.execute(
            "SELECT task_id, external_executor_id FROM task_instance WHERE run_id = 'it-celery'"
        ).fetchall())
    gpu_log, default_log = stack.tail("gpu_worker", 10**7), stack.tail("default_worker", 10**7)
    assert celery_ids["train"] and f"[{celery_ids['train']}] received" in gpu_log
    assert f"[{celery_ids['train']}] received" not in default_log
    for task in ("extract", "validate", "build", "publish"):
        assert f"[{celery_ids[task]}] received" in default_log, task
        assert celery_ids[task] not in gpu_log, task

    from factorflow.warehouse import open_warehouse

    model = open_warehouse(stack.warehouse).latest_result()["model"]
    assert model["dag_run_id"] == "it-celery"
    print(f"\ncelery stack: start-up {stack.startup_seconds:.0f} s, run {seconds:.0f} s")
