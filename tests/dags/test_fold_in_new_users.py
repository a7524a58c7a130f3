"""fold_in_new_users and warm starts end to end with ``dag.test()``, on DuckDB and PostgreSQL.

A full run publishes a model without the newest users; the hourly fold-in then
does nothing while nobody is new, and once they arrive publishes a derived
model (``parent_model_id``) holding the parent's rows untouched plus theirs,
with top-N lists of items they have not rated; a rollback to the parent drops
them from ``current_*``; the next full run warm-starts from the current model
and records it in ``model_runs.warm_start_from``.
"""

from __future__ import annotations

import pytest

from tests.conftest import SMALL_DEMO
from tests.dags.helpers import load_dags, task_states
from tests.warehouses import PG_URI

pytestmark = pytest.mark.integration

CONN_ID = "factorflow_test_fold_pg"
N_LATE = 20  # users who join after the first full run
TRAIN = {"rank": 8, "epochs": 20, "top_n": 5, "min_rows": 1000, "optimizer": "gibbs",
         "patience": None, "seed": 0}
FOLD_TASKS = ("previous_model", "extract", "fold_in", "publish")


@pytest.fixture
def dags(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}",
                       PG_URI.replace("postgresql://", "postgres://"))
    return load_dags()


def _where(backend) -> dict:
    """The conf fields naming the warehouse, source table and schema of ``backend``."""
    if backend.kind == "duckdb":
        return {"warehouse": str(backend.target), "warehouse_conn_id": None,
                "source_table": "raw.ratings", "schema": backend.schema}
    return {"warehouse_conn_id": CONN_ID, "source_table": f"{backend.schema}.ratings",
            "schema": backend.schema}


def _source(backend) -> str:
    return "raw.ratings" if backend.kind == "duckdb" else "{schema}.ratings"


def _write_ratings_without_late_users(backend) -> list:
    """The demo ratings, minus the ``N_LATE`` highest user ids (kept aside); returns those ids."""
    from factorflow.warehouse.demo import write_demo_warehouse

    target = str(backend.target) if backend.kind == "duckdb" else PG_URI
    table = "raw.ratings" if backend.kind == "duckdb" else f"{backend.schema}.ratings"
    write_demo_warehouse(target, table=table, **SMALL_DEMO)
    late = [r[0] for r in backend.fetch(f"SELECT DISTINCT user_id FROM {_source(backend)} "
                                        f"ORDER BY user_id DESC LIMIT {N_LATE}")]
    source, aside = _source(backend), _source(backend).replace("ratings", "late_ratings")
    backend.execute(f"CREATE TABLE {aside} AS SELECT * FROM {source} "
                    f"WHERE user_id >= {min(late)}")
    backend.execute(f"DELETE FROM {source} WHERE user_id >= {min(late)}")
    return late


def _rows(backend, model_id: str) -> dict:
    """Every factor and prediction row of ``model_id``, in a stable order."""
    return {t: sorted(backend.fetch(f"SELECT * FROM {{schema}}.{t} WHERE model_id = ?", model_id),
                      key=repr) for t in ("user_factors", "item_factors", "predictions")}


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_new_users_are_folded_in_as_a_derived_model(dags, tmp_path, kind):
    from tests.conftest import _backend

    backend = next(gen := _backend(kind, tmp_path))
    try:
        _fold_in_story(dags, backend)
    finally:
        next(gen, None)


def _fold_in_story(dags, backend) -> None:
    where = _where(backend)
    late = _write_ratings_without_late_users(backend)
    full = dags["factorize_ratings"].test(run_conf={**where, **TRAIN, "warm_start": False})
    assert str(full.state) == "success", task_states(full)
    [(parent,)] = backend.fetch("SELECT model_id FROM {schema}.current_model")

    # nobody new: the first task skips the rest, nothing is published
    idle = dags["fold_in_new_users"].test(run_conf={**where, "top_n": 5})
    assert task_states(idle) == {t: "skipped" for t in FOLD_TASKS}
    assert backend.count("model_runs") == 1

    before = _rows(backend, parent)
    source, aside = _source(backend), _source(backend).replace("ratings", "late_ratings")
    backend.execute(f"INSERT INTO {source} SELECT * FROM {aside}")
    run = dags["fold_in_new_users"].test(run_conf={**where, "top_n": 5})
    assert task_states(run) == {t: "success" for t in FOLD_TASKS}
    [(derived, parent_id, n_users)] = backend.fetch(
        "SELECT model_id, parent_model_id, n_users FROM {schema}.model_runs "
        "WHERE parent_model_id IS NOT NULL")
    assert parent_id == parent and backend.current() == [derived]
    assert n_users == SMALL_DEMO["n_users"]
    assert _rows(backend, parent) == before  # the parent is untouched
    users = {r[0] for r in backend.fetch("SELECT user_id FROM {schema}.current_user_factors")}
    assert users == {r[1] for r in before["user_factors"]} | set(late)
    assert backend.count("item_factors", derived) == backend.count("item_factors", parent)
    # every new user gets five items, none of them rated
    per_user = dict(backend.fetch("SELECT user_id, count(*) FROM {schema}.predictions "
                                  "WHERE model_id = ? GROUP BY user_id", derived))
    assert all(per_user[u] == 5 for u in late)
    assert backend.fetch(f"SELECT count(*) FROM {{schema}}.current_predictions p JOIN {source} r "
                         "ON r.user_id = p.user_id AND r.item_id = p.item_id") == [(0,)]

    # a rollback to the parent drops the folded users from current_*
    from factorflow.warehouse import open_warehouse

    target = str(backend.target) if backend.kind == "duckdb" else PG_URI
    open_warehouse(target).rollback(to=parent, schema=backend.schema)
    current = {r[0] for r in backend.fetch("SELECT user_id FROM {schema}.current_user_factors")}
    assert current.isdisjoint(late) and len(current) == SMALL_DEMO["n_users"] - N_LATE

    # the next full run starts from the current model and says so
    warm = dags["factorize_ratings"].test(run_conf={**where, **TRAIN, "warm_start": True})
    assert str(warm.state) == "success", task_states(warm)
    [(warm_from, epochs_run)] = backend.fetch(
        "SELECT warm_start_from, epochs_run FROM {schema}.model_runs WHERE dag_run_id = ?",
        warm.run_id)
    assert warm_from == parent and epochs_run < TRAIN["epochs"]
