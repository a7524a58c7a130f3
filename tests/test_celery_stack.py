"""A real CeleryExecutor deployment on this machine: PostgreSQL metadata, Redis broker,
api-server, scheduler, dag-processor, a worker on `default` and one on `gpu`.

The run is triggered through the REST API exactly as the UI's trigger button
does (POST .../dagRuns with a conf and a user's token); `train` must run on the
gpu worker and nothing else there. Then the faults: every stage's task process
SIGKILLed at a random point and retried by Airflow, and the gpu worker itself
SIGKILLed during `train` (its try failed by the scheduler's heartbeat check and
run again on the restarted worker); both runs must publish exactly what the
uninterrupted run did. Every process is stopped by process group.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest


pytestmark = pytest.mark.integration

DAG_ID = "factorize_ratings"
# warm_start off: every run starts from nothing, so two runs publish the same tables
CONF = {"rank": 8, "epochs": 20, "top_n": 5, "min_rows": 1000, "seed": 7, "warm_start": False}
# Enough ratings that every stage's own work (not its imports) is much of its life,
# so that a random kill point often falls while it writes.
RATINGS = {"n_users": 3000, "n_items": 1500, "n_ratings": 300_000, "seed": 7}
WORKERS = {"default_worker": "default", "gpu_worker": "gpu"}
STAGES = ("extract", "validate", "build", "previous_model", "train", "publish")
# Short enough for a test: the delay before a retry, and how long a try may go
# without a heartbeat from its supervisor before the scheduler fails it.
FAULT_SETTINGS = {
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
}
#: What each task writes under the run's artifacts (extract and previous_model run side
#: by side, so a file's time alone does not say whose it is).
OWNS = {"extract": ("extract/ratings",), "validate": ("extract/.factorflow-validate-",),
        "build": ("matrix/",), "previous_model": ("previous/",), "train": ("model/",),
        "publish": ()}
#: model_runs columns that differ between two runs of the same data and seed.
VOLATILE = {"model_id", "dag_run_id", "fit_seconds", "ratings_per_second", "timings",
            "peak_rss_mb", "created_at"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from factorflow.warehouse.demo import write_demo_warehouse
    from tests.stack import running_stack

    root = tmp_path_factory.mktemp("celery")
    warehouse = root / "warehouse.duckdb"
    write_demo_warehouse(warehouse, **RATINGS)
    started = time.monotonic()
    env = {"FACTORFLOW_WAREHOUSE": str(warehouse), "FACTORFLOW_ARTIFACTS_DIR": str(root / "artifacts"),
           "FACTORFLOW_JAX_CACHE": str(root / "jax-cache"), **FAULT_SETTINGS}
    with running_stack(root / "airflow", env, workers=WORKERS, dags=(DAG_ID,)) as stack:
        stack.warehouse = warehouse
        stack.artifacts = root / "artifacts"
        stack.startup_seconds = time.monotonic() - started
        yield stack


def _runs(stack):
    status, body = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")
    assert status == 200, body
    return body["dag_runs"]


def _metadata_dsn(stack) -> str:
    from tests.stack import PG_ADMIN

    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{stack.database}"


def _trigger_and_wait(stack, run_id: str, watcher=None, during=None) -> dict:
    """Trigger ``run_id`` with CONF, call ``during(stack)`` if given, wait for the end.

    Returns ``{"run": ..., "tis": {task_id: ti}, "seconds": ...}``; the watcher
    (a :class:`tests.kills.TaskWatcher`), if any, follows the run throughout.
    """
    started = time.monotonic()
    if watcher is not None:
        watcher.start()
    try:
        status, run = stack.request("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                    {"dag_run_id": run_id, "logical_date": None, "conf": CONF})
        assert status == 200, run
        if during is not None:
            during(stack)
        path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"
        token = stack.token()

        def finished():
            body = stack.request("GET", path, token=token)[1]
            return body if body["state"] in ("success", "failed") else None

        final = stack.wait_for(finished, 600, f"the run {run_id} to finish")
    finally:
        if watcher is not None:
            watcher.stop()
    body = stack.request("GET", f"{path}/taskInstances")[1]
    tis = {ti["task_id"]: ti for ti in body["task_instances"]}
    assert final["state"] == "success", (
        {t: (ti["state"], ti["try_number"]) for t, ti in tis.items()},
        stack.tail("gpu_worker"), stack.tail("default_worker"), stack.tail("scheduler"))
    return {"run": final, "tis": tis, "seconds": time.monotonic() - started}


def _published(warehouse, run_id: str) -> dict:
    """What run ``run_id`` published, less what differs between identical runs."""
    import duckdb

    with duckdb.connect(str(warehouse), read_only=True) as con:
        cursor = con.execute("SELECT * FROM factorflow.model_runs WHERE dag_run_id = ?", [run_id])
        names = [d[0] for d in cursor.description]
        (row,) = cursor.fetchall()
        model = dict(zip(names, row))
        history = json.loads(model.pop("history"))
        model = {k: v for k, v in model.items() if k not in VOLATILE}
        model["history"] = [{k: v for k, v in epoch.items() if k not in ("seconds", "ratings_per_s")}
                            for epoch in history]
        model_id = con.execute("SELECT model_id FROM factorflow.model_runs WHERE dag_run_id = ?",
                               [run_id]).fetchall()[0][0]
        tables = {t: con.execute(f"SELECT * EXCLUDE (model_id) FROM factorflow.{t} "
                                 "WHERE model_id = ? ORDER BY ALL", [model_id]).fetchall()
                  for t in ("user_factors", "item_factors", "predictions")}
    return {"model_runs": model, **tables}


@pytest.fixture(scope="module")
def uninterrupted(stack):
    """Two reference runs, their task processes watched to learn how long each lives.

    The second (warm caches, like the runs the faults are injected into) sets
    the lifetimes; the two must publish the same tables, which is what makes
    comparing a faulted run with them meaningful.
    """
    from tests.kills import TaskWatcher

    results = []
    for run_id in ("it-celery", "it-reference"):
        watcher = TaskWatcher(_metadata_dsn(stack), run_id, stack.artifacts / DAG_ID / run_id)
        result = _trigger_and_wait(stack, run_id, watcher)
        result["lifetimes"] = watcher.lifetimes()
        result["published"] = _published(stack.warehouse, run_id)
        assert set(result["lifetimes"]) == set(STAGES), watcher.tries
        results.append(result)
    first, second = results
    assert second["published"] == first["published"], "two runs with one seed published different tables"
    second["lifetimes"] = {t: min(first["lifetimes"][t], second["lifetimes"][t]) for t in STAGES}
    return {**second, "first": first}


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


def test_a_triggered_run_trains_on_the_gpu_worker(stack, uninterrupted):
    tis = uninterrupted["first"]["tis"]
    assert set(tis) == set(STAGES)
    assert tis["train"]["queue"] == "gpu"
    assert all(ti["queue"] != "gpu" for t, ti in tis.items() if t != "train")

    # which worker ran what: each task's Celery id, in the worker that received it
    import psycopg

    with psycopg.connect(_metadata_dsn(stack)) as con:
        celery_ids = dict(con.execute(
            "SELECT task_id, external_executor_id FROM task_instance WHERE run_id = 'it-celery'"
        ).fetchall())
    gpu_log, default_log = stack.tail("gpu_worker", 10**7), stack.tail("default_worker", 10**7)
    assert celery_ids["train"] and f"[{celery_ids['train']}] received" in gpu_log
    assert f"[{celery_ids['train']}] received" not in default_log
    for task in ("extract", "validate", "build", "previous_model", "publish"):
        assert f"[{celery_ids[task]}] received" in default_log, task
        assert celery_ids[task] not in gpu_log, task

    from factorflow.warehouse import open_warehouse

    model = open_warehouse(stack.warehouse).latest_result()["model"]
    assert model["dag_run_id"] == "it-reference"  # the later of the two
    lives = ", ".join(f"{t} {s:.1f} s" for t, s in uninterrupted["lifetimes"].items())
    print(f"\ncelery stack: start-up {stack.startup_seconds:.0f} s, "
          f"runs {uninterrupted['first']['seconds']:.0f} s and {uninterrupted['seconds']:.0f} s "
          f"(task processes, shortest: {lives})")


@pytest.mark.parametrize("when", ["at-a-random-point", "on-its-first-write"])
def test_every_stage_killed_mid_run_is_retried_to_the_same_tables(stack, uninterrupted, when):
    """SIGKILL each stage's first try (its task process) while it runs, then let Airflow retry.

    At a random point of its life (10-60 % of its shortest uninterrupted one), or
    as soon as it has written a file (so that the killed try surely leaves
    something: a ``.tmp``, a finished artifact, validation's scratch parts, the
    warehouse mid-publish). Every file the killed try wrote under the run's
    artifacts is overwritten with garbage before the retry starts, and the run
    must still publish exactly what the uninterrupted runs did.
    """
    from tests.kills import ON_FIRST_WRITE, TaskWatcher

    seed = int(os.environ.get("FACTORFLOW_KILL_SEED", random.randrange(10**6)))
    run_id = f"it-kill-{when}"
    run_dir = stack.artifacts / DAG_ID / run_id
    lives = uninterrupted["lifetimes"]
    # previous_model writes nothing with warm_start off: it is killed at a random point
    plan = {task: ON_FIRST_WRITE if when == "on-its-first-write" and task != "previous_model"
            else (0.1 * life, 0.6 * life) for task, life in lives.items()}
    watcher = TaskWatcher(_metadata_dsn(stack), run_id, run_dir, kill=plan, seed=seed,
                          watch=(stack.warehouse, stack.warehouse.with_name("warehouse.duckdb.wal")),
                          owns=OWNS)
    print(f"\nkill seed {seed} (FACTORFLOW_KILL_SEED={seed} replays these points)")
    result = _trigger_and_wait(stack, run_id, watcher)
    for task in STAGES:
        first = watcher.first_try(task)
        assert first is not None and first.killed_after is not None, (
            f"{task}'s first try ended before it was killed ({watcher.plan[task]})", seed)
        assert result["tis"][task]["try_number"] == 2, (task, seed)
        assert first.poisoned_at is not None and first.poisoned_at < first.retry_seen, (task, seed)
        print(f"  {task}: killed {first.killed_after:.2f} s into its first try "
              f"(lived {lives[task]:.1f} s uninterrupted), having written "
              f"{', '.join(first.written) or 'nothing'}; overwritten before the retry: "
              f"{', '.join(first.poisoned)}")
    assert _published(stack.warehouse, run_id) == uninterrupted["published"], seed
    leftovers = [str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                 if p.name.endswith(".tmp") or p.name.startswith(".factorflow-")]
    assert leftovers == [], "a killed try's temporary files outlived the run"
    print(f"  run {result['seconds']:.0f} s (uninterrupted {uninterrupted['seconds']:.0f} s)")


def test_a_gpu_worker_killed_during_train_is_rescheduled_by_airflow(stack, uninterrupted):
    """The whole gpu worker (worker, supervisor, task process) SIGKILLed mid-train.

    Nothing reports the try's end: the scheduler fails it when its heartbeats
    stop (20 s here) and the retry runs on the worker started again in its place.
    """
    from tests.kills import TaskWatcher, alive

    run_id = "it-lost-worker"
    watcher = TaskWatcher(_metadata_dsn(stack), run_id, stack.artifacts / DAG_ID / run_id)
    killed = {}

    def kill_the_gpu_worker_mid_train(stack):
        deadline = time.monotonic() + 300
        while (first := watcher.first_try("train")) is None:  # the watcher polls every 50 ms
            assert time.monotonic() < deadline, "train did not start within 300 s"
            time.sleep(0.02)
        # a random point of its life, counted from the process's start as for the other kills
        point = first.started + random.uniform(0.1, 0.6) * uninterrupted["lifetimes"]["train"]
        time.sleep(max(0.0, point - time.time()))
        assert alive(first.pid), "train ended before the worker could be killed"
        killed["pids"] = stack.kill("gpu_worker")
        killed["at"] = time.monotonic()
        stack.restart("gpu_worker")

    result = _trigger_and_wait(stack, run_id, watcher, during=kill_the_gpu_worker_mid_train)
    train = watcher.first_try("train")
    assert train.pid in killed["pids"]
    assert result["tis"]["train"]["try_number"] == 2
    assert all(result["tis"][t]["try_number"] == 1 for t in STAGES if t != "train")
    scheduler = stack.tail("scheduler", 10**7)
    assert "Detected a task instance without a heartbeat" in scheduler, scheduler[-3000:]
    assert "'Task Id': 'train', 'Run Id': 'it-lost-worker'" in scheduler
    assert _published(stack.warehouse, run_id) == uninterrupted["published"]
    print(f"\nlost gpu worker: run {result['seconds']:.0f} s, retried train started "
          f"{next(t.started for t in watcher.tries.values() if t.task_id == 'train' and t.try_number == 2) - train.started:.0f} s "
          f"after the first")
