"""Publish stage: one transaction per model, retries replace, failures change nothing."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pytest

from factorflow.training_run import METRICS_FILE, MODEL_FILE
from factorflow.warehouse import latest_result, publish_model

pytestmark = pytest.mark.integration

TABLES = ("model_runs", "user_factors", "item_factors", "predictions")


def _snapshot(path, schema="factorflow"):
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: sorted(con.execute(f"SELECT * FROM {schema}.{t}").fetchall(), key=repr)
                for t in TABLES}


def _count(path, table, model_id=None, schema="factorflow"):
    where = "" if model_id is None else " WHERE model_id = ?"
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {schema}.{table}{where}",
                           [] if model_id is None else [model_id]).fetchone()[0]


@pytest.fixture
def warehouse(tmp_path):
    return tmp_path / "wh.duckdb"


def _publish(warehouse, small_model, model_id="m1", **kw):
    return publish_model(warehouse, model_id=model_id, model_dir=small_model["model_dir"],
                         matrix_dir=small_model["matrix_dir"],
                         run_info={"dag_id": "d", "dag_run_id": "r", "params": {"rank": 8}}, **kw)


def test_publish_writes_every_table(warehouse, small_model):
    summary = _publish(warehouse, small_model)
    json.dumps(summary)
    m = small_model["matrix"]
    assert summary["user_factors"] == m["n_users"] == _count(warehouse, "user_factors")
    assert summary["item_factors"] == m["n_items"] == _count(warehouse, "item_factors")
    from factorflow.matrix import load_matrices

    data = load_matrices(small_model["matrix_dir"])
    seen = np.bincount(np.concatenate([data.train.users, data.valid.users]), minlength=m["n_users"])
    # N per user, fewer only for users who rated all but fewer than N items
    assert _count(warehouse, "predictions") == np.minimum(5, m["n_items"] - seen).sum()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        run = con.execute("SELECT n_users, n_ratings, rank, valid_rmse, params->>'rank', "
                          "json_array_length(history) FROM factorflow.model_runs").fetchone()
        lengths = con.execute("SELECT DISTINCT len(factors) FROM factorflow.user_factors").fetchall()
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'user_factors'").fetchall())
        ranks = con.execute("SELECT min(rank), max(rank), count(DISTINCT user_id) "
                            "FROM factorflow.predictions").fetchone()
    assert run[:3] == (m["n_users"], m["n_ratings"], 8) and run[3] > 0 and run[4] == "8"
    assert run[5] == small_model["summary"]["epochs_run"]
    from factorflow.model import FactorModel

    # the published columns are the model's own (Gibbs: rank x kept samples)
    assert lengths == [(FactorModel.load(small_model["model_dir"] / MODEL_FILE).rank,)]
    assert types["user_id"] == "BIGINT" and types["factors"] == "FLOAT[]"
    assert ranks == (1, 5, (seen < m["n_items"]).sum())
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rated = con.execute(
            "SELECT count(*) FROM factorflow.predictions p JOIN read_parquet(?) r "
            "USING (user_id, item_id)", [str(small_model["ratings_path"])]).fetchone()[0]
    assert rated == 0, "an already-rated item was recommended"


def test_scores_are_the_models_predictions(warehouse, small_model):
    from factorflow.model import FactorModel
    from factorflow.matrix import load_matrices

    _publish(warehouse, small_model)
    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT user_id, item_id, score FROM factorflow.predictions "
                           "ORDER BY user_id, rank LIMIT 50").fetchall()
    u_index = {v: i for i, v in enumerate(data.user_ids.to_list())}
    i_index = {v: i for i, v in enumerate(data.item_ids.to_list())}
    users = np.array([u_index[r[0]] for r in rows], np.int32)
    items = np.array([i_index[r[1]] for r in rows], np.int32)
    np.testing.assert_allclose(model.predict(users, items), [r[2] for r in rows], rtol=1e-5, atol=1e-5)


def test_retry_replaces_and_other_models_are_untouched(warehouse, small_model):
    _publish(warehouse, small_model, model_id="m1")
    _publish(warehouse, small_model, model_id="m2")
    before = _snapshot(warehouse)
    _publish(warehouse, small_model, model_id="m2")  # a retry of the same run
    after = _snapshot(warehouse)
    assert _count(warehouse, "model_runs") == 2
    for t in ("user_factors", "item_factors", "predictions"):
        assert after[t] == before[t]
    assert [r[0] for r in after["model_runs"]] == ["m1", "m2"]


def test_failure_inside_the_transaction_changes_nothing(warehouse, small_model, tmp_path):
    _publish(warehouse, small_model, model_id="m1")
    before = _snapshot(warehouse)
    broken = tmp_path / "broken"
    shutil.copytree(small_model["model_dir"], broken)
    metrics = json.loads((broken / METRICS_FILE).read_text())
    metrics["epochs_run"] = "not a number"  # fails on the last INSERT, after the deletes
    (broken / METRICS_FILE).write_text(json.dumps(metrics))
    with pytest.raises(duckdb.Error):
        publish_model(warehouse, model_id="m1", model_dir=broken,
                      matrix_dir=small_model["matrix_dir"])
    assert _snapshot(warehouse) == before


def test_non_finite_factors_are_never_published(warehouse, small_model, tmp_path):
    _publish(warehouse, small_model, model_id="m1")
    before = _snapshot(warehouse)
    broken = tmp_path / "nan"
    shutil.copytree(small_model["model_dir"], broken)
    with np.load(broken / MODEL_FILE, allow_pickle=False) as m:
        arrays = dict(m)
    arrays["item_factors"] = arrays["item_factors"].copy()
    arrays["item_factors"][0, 0] = np.nan
    np.savez(broken / MODEL_FILE, **arrays)
    with pytest.raises(ValueError, match="non-finite item factors"):
        publish_model(warehouse, model_id="m2", model_dir=broken, matrix_dir=small_model["matrix_dir"])
    assert _snapshot(warehouse) == before


@pytest.mark.parametrize("schema", ["x; DROP TABLE factorflow.model_runs", 'a"b', "ünï", ""])
def test_hostile_schema_names_are_refused(warehouse, small_model, schema):
    _publish(warehouse, small_model, model_id="m1")
    before = _snapshot(warehouse)
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        _publish(warehouse, small_model, model_id="m2", schema=schema)
    assert _snapshot(warehouse) == before


def test_latest_result_shows_the_newest_model(warehouse, small_model):
    _publish(warehouse, small_model, model_id="m1")
    _publish(warehouse, small_model, model_id="m2")
    result = latest_result(warehouse, top_n=3)
    assert result["model"]["model_id"] == "m2"
    assert [r["rank"] for r in result["recommendations"]] == [1, 2, 3]
    scores = [r["score"] for r in result["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(LookupError):
        latest_result(warehouse, schema="empty_schema")


def test_string_ids_are_published_exactly_as_given(tmp_path, small_model):
    """UUID-like ids survive extract -> build -> train -> publish unchanged."""
    import uuid

    import polars as pl

    from factorflow.demo import generate_ratings
    from factorflow.matrix import build_matrices
    from factorflow.training_run import train_factors

    d = generate_ratings(n_users=60, n_items=40, n_ratings=900, seed=5)
    user_names = {u: str(uuid.UUID(int=int(u) * 7919)) for u in np.unique(d["user_id"])}
    item_names = {i: f"sku-{i}-ü" for i in np.unique(d["item_id"])}
    ratings = pl.DataFrame({"user_id": [user_names[u] for u in d["user_id"]],
                            "item_id": [item_names[i] for i in d["item_id"]],
                            "rating": d["rating"]})
    ratings.write_parquet(tmp_path / "ratings.parquet")
    matrix = build_matrices(tmp_path / "ratings.parquet", tmp_path / "matrix")
    model = train_factors(matrix["matrix_dir"], tmp_path / "model", top_n=3, rank=4, epochs=5)
    warehouse = tmp_path / "wh.duckdb"
    publish_model(warehouse, model_id="s1", model_dir=model["model_dir"],
                  matrix_dir=matrix["matrix_dir"])
    with duckdb.connect(str(warehouse), read_only=True) as con:
        users = {r[0] for r in con.execute("SELECT user_id FROM factorflow.user_factors").fetchall()}
        items = {r[0] for r in con.execute("SELECT item_id FROM factorflow.item_factors").fetchall()}
        recommended = con.execute("SELECT DISTINCT item_id FROM factorflow.predictions").fetchall()
        (user_type,) = con.execute("SELECT data_type FROM information_schema.columns WHERE "
                                   "table_name = 'predictions' AND column_name = 'user_id'").fetchone()
    assert users == set(user_names.values()) and items == set(item_names.values())
    assert {r[0] for r in recommended} <= items and user_type == "VARCHAR"
    # publishing integer ids into these VARCHAR tables is refused, naming the column
    with pytest.raises(ValueError, match="user_factors.user_id holds VARCHAR"):
        _publish(warehouse, small_model, model_id="int-ids")


def test_records_loss_and_optimizer_and_migrates_older_tables(warehouse, small_model):
    _publish(warehouse, small_model, model_id="old")
    with duckdb.connect(str(warehouse)) as con:  # as published before those columns existed
        con.execute("ALTER TABLE factorflow.model_runs DROP COLUMN loss")
        con.execute("ALTER TABLE factorflow.model_runs DROP COLUMN optimizer")
        con.execute("UPDATE factorflow.model_runs SET model_id = 'old'")
    _publish(warehouse, small_model, model_id="m1")
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.execute("SELECT model_id, loss, optimizer FROM factorflow.model_runs "
                           "ORDER BY model_id").fetchall()
    config = json.loads((small_model["model_dir"] / METRICS_FILE).read_text())["config"]
    assert rows == [("m1", str(config["loss"]), config["optimizer"]), ("old", None, None)]
