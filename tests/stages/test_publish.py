"""Publish stage, on both back ends: one transaction per model, retries replace,
failures change nothing."""

from __future__ import annotations

import json
import shutil

import duckdb
import numpy as np
import pytest

from factorflow.stages.train import METRICS_FILE, MODEL_FILE
from factorflow.stages.publish import publish_model
from factorflow.warehouse import open_warehouse
from tests.warehouses import duckdb_snapshot, publish_small_model

pytestmark = pytest.mark.integration

ARRAY_TYPE = {"duckdb": "FLOAT[]", "postgres": "ARRAY"}
ID_TYPES = {"duckdb": ("BIGINT", "VARCHAR"), "postgres": ("BIGINT", "TEXT")}


@pytest.fixture
def warehouse(tmp_path):
    return tmp_path / "wh.duckdb"


RUN_INFO = {"dag_id": "d", "dag_run_id": "r", "params": {"rank": 8}}


def _publish(target, small_model, model_id="m1", **kw):
    return publish_small_model(target, small_model, model_id, run_info=RUN_INFO, **kw)


def _on(backend, small_model, model_id="m1", **kw):
    return _publish(backend.target, small_model, model_id, schema=backend.schema, **kw)


def test_publish_writes_every_table(backend, small_model):
    summary = _on(backend, small_model)
    json.dumps(summary)
    m = small_model["matrix"]
    assert summary["user_factors"] == m["n_users"] == backend.count("user_factors")
    assert summary["item_factors"] == m["n_items"] == backend.count("item_factors")
    from factorflow.stages.build import load_matrices

    data = load_matrices(small_model["matrix_dir"])
    seen = np.bincount(np.concatenate([data.train.users, data.valid.users]), minlength=m["n_users"])
    # N per user, fewer only for users who rated all but fewer than N items
    assert backend.count("predictions") == np.minimum(5, m["n_items"] - seen).sum()
    [run] = backend.fetch("SELECT n_users, n_ratings, rank, valid_rmse, params->>'rank', "
                          "CAST(history AS VARCHAR) FROM {schema}.model_runs")
    lengths = {len(f) for (f,) in backend.fetch("SELECT factors FROM {schema}.user_factors")}
    [ranks] = backend.fetch("SELECT min(rank), max(rank), count(DISTINCT user_id) "
                            "FROM {schema}.predictions")
    assert run[:3] == (m["n_users"], m["n_ratings"], 8) and run[3] > 0 and run[4] == "8"
    assert len(json.loads(run[5])) == small_model["summary"]["epochs_run"]
    from factorflow.engine.model import FactorModel

    # the published columns are the model's own (Gibbs: rank x kept samples)
    assert lengths == {FactorModel.load(small_model["model_dir"] / MODEL_FILE).rank}
    assert backend.column_type("user_factors", "user_id") == ID_TYPES[backend.kind][0]
    assert backend.column_type("user_factors", "factors") == ARRAY_TYPE[backend.kind]
    assert ranks == (1, 5, (seen < m["n_items"]).sum())
    published = set(backend.fetch("SELECT user_id, item_id FROM {schema}.predictions"))
    with duckdb.connect() as con:
        rated = set(con.execute("SELECT user_id, item_id FROM read_parquet(?)",
                                [str(small_model["ratings_path"])]).fetchall())
    assert not published & rated, "an already-rated item was recommended"


def test_scores_are_the_models_predictions(backend, small_model):
    from factorflow.stages.build import load_matrices
    from factorflow.engine.model import FactorModel

    _on(backend, small_model)
    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    rows = backend.fetch("SELECT user_id, item_id, score FROM {schema}.predictions "
                         "ORDER BY user_id, rank LIMIT 50")
    u_index = {v: i for i, v in enumerate(data.user_ids.to_list())}
    i_index = {v: i for i, v in enumerate(data.item_ids.to_list())}
    users = np.array([u_index[r[0]] for r in rows], np.int32)
    items = np.array([i_index[r[1]] for r in rows], np.int32)
    # the model's predictions, clipped to the run's rating scale (ranked before clipping)
    metrics = json.loads((small_model["model_dir"] / METRICS_FILE).read_text())
    np.testing.assert_allclose(np.clip(model.predict(users, items), metrics["rating_min"],
                                       metrics["rating_max"]),
                               [r[2] for r in rows], rtol=1e-5, atol=1e-5)
    # the stored factors are the model's, to the bit (float32 both ways)
    [(factors,)] = backend.fetch("SELECT factors FROM {schema}.item_factors WHERE item_id = ?",
                                 data.item_ids[0])
    np.testing.assert_array_equal(np.asarray(factors, np.float32), model.params.item_factors[0])


def test_retry_replaces_and_other_models_are_untouched(backend, small_model):
    _on(backend, small_model, model_id="m1")
    _on(backend, small_model, model_id="m2")
    before = backend.snapshot()
    _on(backend, small_model, model_id="m2")  # a retry of the same run
    after = backend.snapshot()
    assert backend.count("model_runs") == 2
    for t in ("user_factors", "item_factors", "predictions"):
        assert after[t] == before[t]
    assert [r[0] for r in after["model_runs"]] == ["m1", "m2"]


def test_failure_inside_the_transaction_changes_nothing(backend, small_model, tmp_path):
    _on(backend, small_model, model_id="m1")
    before = backend.snapshot()
    broken = tmp_path / "broken"
    shutil.copytree(small_model["model_dir"], broken)
    metrics = json.loads((broken / METRICS_FILE).read_text())
    metrics["epochs_run"] = "not a number"  # fails on the run INSERT, after deletes and copies
    (broken / METRICS_FILE).write_text(json.dumps(metrics))
    with pytest.raises(Exception, match="(?i)not a number|conversion|invalid input"):
        publish_model(backend.target, model_id="m1", model_dir=broken,
                      matrix_dir=small_model["matrix_dir"], schema=backend.schema)
    assert backend.snapshot() == before


def test_non_finite_factors_are_never_published(backend, small_model, tmp_path):
    _on(backend, small_model, model_id="m1")
    before = backend.snapshot()
    broken = tmp_path / "nan"
    shutil.copytree(small_model["model_dir"], broken)
    with np.load(broken / MODEL_FILE, allow_pickle=False) as m:
        arrays = dict(m)
    arrays["item_factors"] = arrays["item_factors"].copy()
    arrays["item_factors"][0, 0] = np.nan
    np.savez(broken / MODEL_FILE, **arrays)
    with pytest.raises(ValueError, match="non-finite item factors"):
        publish_model(backend.target, model_id="m2", model_dir=broken,
                      matrix_dir=small_model["matrix_dir"], schema=backend.schema)
    assert backend.snapshot() == before


@pytest.mark.parametrize("schema", ["x; DROP TABLE factorflow.model_runs", 'a"b', "ünï", "",
                                    "a.b", "x' OR '1'='1"])
def test_hostile_schema_names_are_refused(backend, small_model, schema):
    _on(backend, small_model, model_id="m1")
    before = backend.snapshot()
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        _publish(backend.target, small_model, model_id="m2", schema=schema)
    assert backend.snapshot() == before


def test_hostile_values_are_bound_not_spliced(backend, small_model):
    model_id = "m'); DROP TABLE model_runs; --"
    _on(backend, small_model, model_id=model_id)
    assert backend.current() == [model_id] and backend.count("predictions", model_id) > 0


def test_latest_result_shows_the_newest_model(backend, small_model):
    _on(backend, small_model, model_id="m1")
    _on(backend, small_model, model_id="m2")
    result = open_warehouse(backend.target).latest_result(schema=backend.schema, top_n=3)
    assert result["model"]["model_id"] == "m2"
    assert [r["rank"] for r in result["recommendations"]] == [1, 2, 3]
    scores = [r["score"] for r in result["recommendations"]]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(LookupError):
        open_warehouse(backend.target).latest_result(schema="ff_never_published")


def test_string_ids_are_published_exactly_as_given(backend, tmp_path, small_model):
    """UUID-like ids survive extract -> build -> train -> publish unchanged."""
    import uuid

    import polars as pl

    from factorflow.warehouse.demo import generate_ratings
    from factorflow.stages.build import build_matrices
    from factorflow.stages.train import train_factors

    d = generate_ratings(n_users=60, n_items=40, n_ratings=900, seed=5)
    user_names = {u: str(uuid.UUID(int=int(u) * 7919)) for u in np.unique(d["user_id"])}
    item_names = {i: f'sku-{i}-ü,"q"' for i in np.unique(d["item_id"])}
    ratings = pl.DataFrame({"user_id": [user_names[u] for u in d["user_id"]],
                            "item_id": [item_names[i] for i in d["item_id"]],
                            "rating": d["rating"]})
    ratings.write_parquet(tmp_path / "ratings.parquet")
    matrix = build_matrices(tmp_path / "ratings.parquet", tmp_path / "matrix")
    model = train_factors(matrix["matrix_dir"], tmp_path / "model", top_n=3, rank=4, epochs=5)
    publish_model(backend.target, model_id="s1", model_dir=model["model_dir"],
                  matrix_dir=matrix["matrix_dir"], schema=backend.schema)
    users = {r[0] for r in backend.fetch("SELECT user_id FROM {schema}.user_factors")}
    items = {r[0] for r in backend.fetch("SELECT item_id FROM {schema}.item_factors")}
    recommended = {r[0] for r in backend.fetch("SELECT DISTINCT item_id FROM {schema}.predictions")}
    assert users == set(user_names.values()) and items == set(item_names.values())
    string_type = ID_TYPES[backend.kind][1]
    assert recommended <= items and backend.column_type("predictions", "user_id") == string_type
    # publishing integer ids into these string tables is refused, naming the column
    with pytest.raises(ValueError, match=f"user_factors.user_id holds {string_type}"):
        _on(backend, small_model, model_id="int-ids")
    assert backend.current() == ["s1"]


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


@pytest.mark.parametrize("how", ["half", "garbage"])
@pytest.mark.parametrize("name, kind, task", [
    ("model.npz", ".npz", "train"), ("recommendations.npz", ".npz", "train"),
    ("metrics.json", "JSON file", "train"), ("train.npz", ".npz", "build"),
    ("users.parquet", "Parquet file", "build"), ("matrix.json", "JSON file", "build")])
def test_a_damaged_artifact_names_its_task_and_publishes_nothing(small_model, warehouse,
                                                                  tmp_path, name, kind, task,
                                                                  how):
    from factorflow.engine.artifacts import ArtifactError
    from tests.stages.test_build import damage

    _publish(warehouse, small_model, "m1")
    before = duckdb_snapshot(warehouse)
    copy = {"model_dir": shutil.copytree(small_model["model_dir"], tmp_path / "model"),
            "matrix_dir": shutil.copytree(small_model["matrix_dir"], tmp_path / "matrix")}
    path = copy["model_dir" if task == "train" else "matrix_dir"] / name
    damage(path, how)
    with pytest.raises(ArtifactError) as info:
        _publish(warehouse, copy, "m2")
    assert str(info.value) == (f"{path} is not a readable {kind} (truncated?): "
                               f"clear the `{task}` task to write it again")
    assert duckdb_snapshot(warehouse) == before
