"""End to end on PostgreSQL: the DAG extracts from and publishes to a Postgres
warehouse named by an Airflow connection, and the downstream DAG follows."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SMALL_DEMO
from tests.dags.helpers import load_dags, task_states
from tests.warehouses import PG_URI

pytestmark = pytest.mark.integration

CONN_ID = "factorflow_test_pg"
CONF = {"rank": 8, "epochs": 30, "top_n": 5, "min_rows": 1000}


@pytest.fixture
def dags(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    # an Airflow connection, as a deployment would define it (here: by environment)
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", PG_URI.replace("postgresql://", "postgres://"))
    return load_dags()


def test_the_dag_runs_on_a_postgres_warehouse(dags, postgres_backend):
    from factorflow.warehouse.demo import write_demo_warehouse

    pg = postgres_backend
    write_demo_warehouse(PG_URI, table=f"{pg.schema}.ratings", **SMALL_DEMO)
    conf = {"warehouse_conn_id": CONN_ID, "source_table": f"{pg.schema}.ratings",
            "schema": pg.schema, **CONF}
    run = dags["factorize_ratings"].test(run_conf=conf)
    assert task_states(run) == {t: "success" for t in ("extract", "validate", "build",
                                                        "previous_model", "train", "publish")}
    [(model_id, n_users, n_items, rmse, baseline, params)] = pg.fetch(
        "SELECT model_id, n_users, n_items, valid_rmse, baseline_valid_rmse, params "
        "FROM {schema}.model_runs")
    assert model_id.endswith(run.run_id) and rmse < 0.85 * baseline
    assert params["warehouse_conn_id"] == CONN_ID
    assert pg.count("user_factors") == n_users == SMALL_DEMO["n_users"]
    assert pg.count("item_factors") == n_items
    assert pg.fetch("SELECT count(*) FROM {schema}.predictions p JOIN {schema}.ratings r "
                    "USING (user_id, item_id)") == [(0,)]

    # the asset event names the connection (never a password); the downstream DAG follows it
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        extras = [e.extra for e in session.query(AssetEvent)
                  .filter(AssetEvent.source_run_id == run.run_id).all()]
    assert extras and all(e["warehouse_conn_id"] == CONN_ID and e["schema"] == pg.schema
                          for e in extras)
    assert "password" not in json.dumps(extras)
    daily = dags["recommendations_daily"].test(
        run_conf={"warehouse_conn_id": CONN_ID, "schema": pg.schema})
    assert task_states(daily) == {"materialize": "success"}
    assert pg.fetch("SELECT count(*), count(DISTINCT model_id) FROM {schema}.recommendations_daily") \
        == [(pg.count("current_predictions"), 1)]

    # bad data in the Postgres source fails at validate; the published model is untouched
    before = pg.snapshot()
    pg.execute("UPDATE {schema}.ratings SET rating = 9 WHERE mod(user_id, 89) = 0")
    bad = dags["factorize_ratings"].test(run_conf=conf)
    states = task_states(bad)
    assert states["validate"] == "failed" and states["publish"] == "upstream_failed"
    assert pg.snapshot() == before


def test_a_connection_of_another_type_fails_at_once_naming_it(dags, monkeypatch, small_warehouse,
                                                               capfd):
    monkeypatch.setenv("AIRFLOW_CONN_NOT_A_WAREHOUSE", "http://example.invalid")
    run = dags["factorize_ratings"].test(run_conf={
        "warehouse_conn_id": "not_a_warehouse", "warehouse": str(small_warehouse), **CONF})
    ti = {t.task_id: t for t in run.get_task_instances()}["extract"]
    assert str(ti.state) == "failed" and ti.try_number == 1  # not retried
    out = capfd.readouterr()
    assert "connection 'not_a_warehouse' has type 'http'" in out.out + out.err


def test_a_postgres_source_can_feed_a_duckdb_warehouse(dags, postgres_backend, tmp_path):
    from factorflow.warehouse.demo import write_demo_warehouse
    from tests.warehouses import Backend

    pg = postgres_backend
    write_demo_warehouse(PG_URI, table=f"{pg.schema}.ratings", **SMALL_DEMO)
    warehouse = tmp_path / "wh.duckdb"
    run = dags["factorize_ratings"].test(run_conf={
        "source_conn_id": CONN_ID, "source_table": f"{pg.schema}.ratings",
        "warehouse": str(warehouse), **CONF})
    assert str(run.state) == "success"
    duck = Backend("duckdb", warehouse, "factorflow")
    assert duck.count("user_factors") == SMALL_DEMO["n_users"]
    assert pg.fetch("SELECT count(*) FROM information_schema.tables WHERE table_schema = ?",
                    pg.schema) == [(1,)]  # only the source table: nothing published there
