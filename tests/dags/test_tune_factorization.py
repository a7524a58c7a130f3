"""The sweep DAG end to end: mapped candidates on the gpu queue, all recorded,
only the best published."""

from __future__ import annotations

import json

import pytest

from tests.dags.helpers import load_dags

pytestmark = pytest.mark.integration


def test_a_small_grid_publishes_only_the_best(small_warehouse, tmp_path, monkeypatch):
    import shutil

    from tests.warehouses import Backend

    warehouse = tmp_path / "wh.duckdb"
    shutil.copy(small_warehouse, warehouse)
    monkeypatch.setenv("FACTORFLOW_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    dag = load_dags()["tune_factorization"]
    space = {"rank": [2, 8], "reg": [0.05, 5.0]}
    run = dag.test(run_conf={"warehouse": str(warehouse), "space": space, "optimizer": "adam",
                             "epochs": 40, "learning_rate": 0.05, "min_rows": 1000, "top_n": 5})
    tis = run.get_task_instances()
    trains = [ti for ti in tis if ti.task_id == "train"]
    assert str(run.state) == "success", {ti.task_id: str(ti.state) for ti in tis}
    assert sorted(ti.map_index for ti in trains) == [0, 1, 2, 3]
    assert all(ti.queue == "gpu" for ti in trains)
    assert all(ti.queue != "gpu" for ti in tis if ti.task_id != "train")

    wh = Backend("duckdb", warehouse, "factorflow")
    [(model_id, rank, rmse)] = wh.fetch("SELECT model_id, rank, valid_rmse FROM {schema}.model_runs "
                                        "WHERE candidate_of IS NULL")
    candidates = wh.fetch("SELECT model_id, rank, valid_rmse, params FROM {schema}.model_runs "
                          "WHERE candidate_of = ? ORDER BY model_id", model_id)
    assert len(candidates) == 4
    settings = {(json.loads(p)["rank"], json.loads(p)["reg"]) for _, _, _, p in candidates}
    assert settings == {(r, g) for r in (2, 8) for g in (0.05, 5.0)}
    assert rmse == min(c[2] for c in candidates)  # the best, by validation RMSE
    assert wh.current() == [model_id]
    widths = {len(f) for (f,) in wh.fetch("SELECT factors FROM {schema}.current_user_factors")}
    assert widths == {rank}
    # candidates have no factors of their own and never become current
    assert wh.fetch("SELECT count(*) FROM {schema}.user_factors WHERE model_id <> ?",
                    model_id) == [(0,)]
    # per stage: seconds and peak RSS; train's are the candidates' summed seconds and largest peak
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        trains = [row.value for row in session.query(XComModel).filter(
            XComModel.run_id == run.run_id, XComModel.task_id == "train",
            XComModel.key == "return_value")]
    [(timings, peaks)] = wh.fetch("SELECT timings, peak_rss_mb FROM {schema}.model_runs "
                                  "WHERE model_id = ?", model_id)
    timings, peaks = json.loads(timings), json.loads(peaks)
    assert set(timings) == set(peaks) == {"extract", "validate", "build", "train"}
    assert len(trains) == 4 and peaks["train"] == max(t["peak_rss_mb"] for t in trains)
    assert timings["train"] == pytest.approx(sum(t["seconds"] for t in trains), abs=0.01)
