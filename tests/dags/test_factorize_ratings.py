"""End to end: the real DAG through ``dag.test()`` on a generated DuckDB warehouse."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from tests.conftest import SMALL_DEMO
from tests.dags.helpers import load_dags, task_states
from tests.warehouses import duckdb_snapshot

pytestmark = pytest.mark.integration

TASKS = ("extract", "validate", "build", "previous_model", "train", "publish")
CONF = {"rank": 8, "epochs": 40, "top_n": 5, "min_rows": 1000}


@pytest.fixture(scope="module")
def dag(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path_factory.mktemp("artifacts")))
    return load_dags()["factorize_ratings"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    from factorflow.warehouse.demo import write_demo_warehouse

    path = tmp_path_factory.mktemp("e2e") / "warehouse.duckdb"
    write_demo_warehouse(path, **SMALL_DEMO)
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def good_run(dag, warehouse):
    dag_run = dag.test(run_conf={"warehouse": str(warehouse), **CONF})
    return dag_run


def test_every_task_succeeds(good_run):
    assert task_states(good_run) == {t: "success" for t in TASKS}
    assert str(good_run.state) == "success"


def test_published_tables(good_run, warehouse):
    with duckdb.connect(str(warehouse), read_only=True) as con:
        runs = con.execute("SELECT model_id, dag_run_id, n_users, n_items, n_ratings, rank, "
                           "valid_rmse, baseline_valid_rmse, timings, peak_rss_mb "
                           "FROM factorflow.model_runs").fetchall()
        assert len(runs) == 1
        model_id, run_id, n_users, n_items, n_ratings, rank, rmse, baseline, timings, peaks = runs[0]
        assert run_id == good_run.run_id and model_id.endswith(good_run.run_id)
        source = con.execute("SELECT count(DISTINCT user_id), count(DISTINCT item_id), count(*) "
                             "FROM raw.ratings").fetchone()
        assert (n_users, n_items, n_ratings) == source and rank == 8
        # factors for every user and item, with their original ids
        missing_users = con.execute("SELECT count(*) FROM (SELECT DISTINCT user_id FROM raw.ratings) "
                                    "ANTI JOIN factorflow.user_factors USING (user_id)").fetchone()[0]
        missing_items = con.execute("SELECT count(*) FROM (SELECT DISTINCT item_id FROM raw.ratings) "
                                    "ANTI JOIN factorflow.item_factors USING (item_id)").fetchone()[0]
        assert missing_users == missing_items == 0
        # N predictions per user (fewer only if the user has rated all but < N items)
        per_user = con.execute("""
            SELECT u.user_id, least(5, ?::BIGINT - count(DISTINCT r.item_id)) AS expected,
                   (SELECT count(*) FROM factorflow.predictions p WHERE p.user_id = u.user_id) AS got
            FROM factorflow.user_factors u JOIN raw.ratings r USING (user_id)
            GROUP BY u.user_id""", [n_items]).fetchall()
        assert all(got == expected for _, expected, got in per_user)
        assert sum(got for *_, got in per_user) > 0.99 * 5 * n_users
        already_rated = con.execute("SELECT count(*) FROM factorflow.predictions "
                                    "JOIN raw.ratings USING (user_id, item_id)").fetchone()[0]
        assert already_rated == 0
    # clearly better than a bias-only model on data with real low-rank structure
    assert rmse < 0.85 * baseline, (rmse, baseline)
    # each stage's own wall time and peak RSS, as its task pushed them
    xcoms = _xcoms(good_run)
    for column, key in ((timings, "seconds"), (peaks, "peak_rss_mb")):
        assert json.loads(column) == {t: xcoms[t, key] for t in TASKS if t != "publish"}


def _xcoms(dag_run) -> dict[tuple[str, str], object]:
    """``{(task_id, key): value}`` of a run's XComs."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.run_id == dag_run.run_id).all()
        return {(row.task_id, row.key): row.value for row in rows}


def test_xcom_carries_only_small_json(good_run):
    xcoms = _xcoms(good_run)
    assert xcoms
    for (task_id, key), value in xcoms.items():
        text = json.dumps(value)
        assert len(text) < 4096, (task_id, key, len(text))


def test_every_task_pushes_its_wall_time_and_peak_memory(good_run):
    xcoms = _xcoms(good_run)
    for task in TASKS:
        seconds, peak = xcoms[task, "seconds"], xcoms[task, "peak_rss_mb"]
        summary = json.loads(json.dumps(xcoms[task, "return_value"]))
        assert (summary["seconds"], summary["peak_rss_mb"]) == (seconds, peak)
        # a whole Python process with Airflow and the stage's libraries loaded is > 100 MB
        assert 100 < peak < 16_000, (task, seconds, peak)
        # with nothing published yet, previous_model answers in well under a millisecond
        assert seconds >= 0 if task == "previous_model" else seconds > 0, (task, seconds)


BAD_TABLES = {
    "null_rating": ("SELECT * REPLACE (CASE WHEN user_id % 97 = 0 THEN NULL ELSE rating END AS rating) "
                    "FROM raw.ratings", "expect_column_values_to_not_be_null(rating)"),
    "out_of_range": ("SELECT * REPLACE (CASE WHEN user_id % 89 = 0 THEN 7.5 ELSE rating END AS rating) "
                     "FROM raw.ratings", "expect_column_values_to_be_between(rating)"),
    "duplicate_pairs": ("SELECT * FROM raw.ratings UNION ALL (SELECT * FROM raw.ratings LIMIT 3)",
                        "expect_compound_columns_to_be_unique(user_id, item_id)"),
}


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_bad_input_fails_at_validate_and_keeps_the_published_model(
        good_run, dag, warehouse, case, capfd):
    query, expectation = BAD_TABLES[case]
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"CREATE OR REPLACE TABLE raw.{case} AS {query}")
    digest, before = _sha256(warehouse), duckdb_snapshot(warehouse)

    dag_run = dag.test(run_conf={"warehouse": str(warehouse), "source_table": f"raw.{case}", **CONF})

    states = task_states(dag_run)
    assert states["extract"] == "success" and states["validate"] == "failed"
    assert all(states[t] == "upstream_failed" for t in ("build", "train", "publish"))
    out = capfd.readouterr()
    report = out.out + out.err
    assert "ratings validation failed" in report and expectation in report
    # the previously published model is byte-for-byte intact
    assert _sha256(warehouse) == digest
    assert duckdb_snapshot(warehouse) == before


def test_airflow_cli_runs_the_dag(tmp_path):
    """The path `make demo` takes: `airflow dags test` in a subprocess, with a conf."""
    import os
    import subprocess

    from factorflow.warehouse.demo import write_demo_warehouse

    warehouse = tmp_path / "cli.duckdb"
    write_demo_warehouse(warehouse, **SMALL_DEMO)
    env = {**os.environ, "FACTORFLOW_ARTIFACTS_DIR": str(tmp_path / "artifacts")}
    conf = json.dumps({"warehouse": str(warehouse), **CONF})
    airflow = Path(os.sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "dags", "test", "factorize_ratings", "--conf", conf],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with duckdb.connect(str(warehouse), read_only=True) as con:
        (n_models,) = con.execute("SELECT count(*) FROM factorflow.model_runs").fetchone()
        (n_items,) = con.execute("SELECT count(*) FROM factorflow.item_factors").fetchone()
    assert n_models == 1 and n_items == SMALL_DEMO["n_items"]


def test_publish_emits_asset_events_and_the_downstream_dag_materializes(good_run, warehouse):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        events = (session.query(AssetEvent, AssetModel.name)
                  .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetEvent.source_run_id == good_run.run_id).all())
        names = {name for _, name in events}
        extras = [event.extra for event, _ in events]
    assert names == {"factorflow.current_predictions", "factorflow.current_factors",
                     "factorflow.model_runs"}
    assert all(e["warehouse"] == str(warehouse) and e["model_id"].endswith(good_run.run_id)
               for e in extras)

    downstream = load_dags()["recommendations_daily"]
    assert "factorflow.current_predictions" in str(downstream.timetable.asset_condition)
    run = downstream.test(run_conf={"warehouse": str(warehouse)})
    assert task_states(run) == {"materialize": "success"}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        daily = con.execute("SELECT count(*), count(DISTINCT model_id), min(day) = current_date "
                            "FROM factorflow.recommendations_daily").fetchone()
        (current,) = con.execute("SELECT count(*) FROM factorflow.current_predictions").fetchone()
    assert daily == (current, 1, True)
