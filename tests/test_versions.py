"""Versioned publishing on both back ends: current_* views, retention, rollback,
and the downstream queries the README documents."""

from __future__ import annotations

import numpy as np
import pytest

from factorflow.cli.main import main
from factorflow.stages.build import load_matrices
from factorflow.engine.model import FactorModel
from factorflow.stages.train import MODEL_FILE
from factorflow.stages.publish import publish_model
from factorflow.warehouse import open_warehouse
from tests.warehouses import publish_small_model

pytestmark = pytest.mark.integration


def _publish(backend, small_model, model_id, keep=5):
    return publish_small_model(backend.target, small_model, model_id, keep=keep,
                               schema=backend.schema)


def _query(backend, name, **params):
    return open_warehouse(backend.target).run_query("downstream.sql", name, schema=backend.schema,
                                                    params=params)[1]


#: The damping of the top-rated list (as the baseline's item biases).
DAMPING = 10


def _expected_cold_start(matrix_dir, n):
    """Both cold-start lists, computed here from the training triplets: ``[(item_id, score)]``.

    Most rated: score = number of ratings, ties by mean rating then item id.
    Top rated: score = (sum + DAMPING * global mean) / (count + DAMPING).
    """
    import polars as pl

    data = load_matrices(matrix_dir)
    train = pl.DataFrame({"i": data.train.items, "r": data.train.ratings.astype(np.float64)})
    stats = (pl.DataFrame({"i": np.arange(len(data.item_ids), dtype=np.int32),
                           "item_id": data.item_ids})
             .join(train.group_by("i").agg(n=pl.len(), total=pl.col("r").sum(),
                                           mean=pl.col("r").mean()), on="i", how="left")
             .with_columns(pl.col("n").fill_null(0), pl.col("total").fill_null(0.0)))
    prior = stats["total"].sum() / stats["n"].sum()
    popular = stats.sort(["n", "mean", "item_id"], descending=[True, True, False],
                         nulls_last=True).head(n)
    top = (stats.with_columns(score=(pl.col("total") + DAMPING * prior) / (pl.col("n") + DAMPING))
           .sort(["score", "n", "item_id"], descending=[True, True, False]).head(n))
    return list(zip(popular["item_id"], popular["n"])), list(zip(top["item_id"], top["score"]))


def _assert_cold_start(backend, matrix_dir, n=10):
    """The published cold-start lists are the ones counted from ``matrix_dir``'s train split."""
    popular, top_rated = _expected_cold_start(matrix_dir, n)
    cold = _query(backend, "cold_start", n=n)
    assert [r[0] for r in cold] == list(range(1, n + 1))
    assert [(r[1], r[2]) for r in cold] == popular  # the most rated first, by exact counts
    best = _query(backend, "cold_start_top_rated", n=n)
    assert [r[0] for r in best] == list(range(1, n + 1))
    assert [r[1] for r in best] == [item for item, _ in top_rated]
    np.testing.assert_allclose([r[2] for r in best], [score for _, score in top_rated], rtol=1e-12)


def test_views_follow_the_newest_model_and_rollback_repoints_them(backend, small_model, capsys):
    _publish(backend, small_model, "m1")
    _publish(backend, small_model, "m2")
    assert backend.current() == ["m2"]
    assert backend.count("current_user_factors") == small_model["matrix"]["n_users"]
    assert main(["rollback", "--warehouse", str(backend.target), "--schema", backend.schema,
                 "--to", "m1"]) == 0
    assert "now show model m1" in capsys.readouterr().out
    assert backend.current() == ["m1"]
    for view in ("current_predictions", "current_user_factors", "current_item_factors"):
        assert {r[0] for r in backend.fetch(f"SELECT DISTINCT model_id FROM {{schema}}.{view}")} == {"m1"}
    with pytest.raises(LookupError, match="no kept model 'm9'"):
        open_warehouse(backend.target).rollback(to="m9", schema=backend.schema)
    assert main(["rollback", "--warehouse", str(backend.target), "--schema", backend.schema,
                 "--to", "m9"]) == 2
    assert "no kept model 'm9'" in capsys.readouterr().err
    assert backend.current() == ["m1"]
    # the next publish becomes current again
    _publish(backend, small_model, "m3")
    assert backend.current() == ["m3"]


def test_retention_keeps_the_newest_k(backend, small_model):
    for k in range(1, 5):
        _publish(backend, small_model, f"m{k}", keep=2)
    for table in ("model_runs", "user_factors", "item_factors", "predictions"):
        kept = {r[0] for r in backend.fetch(f"SELECT DISTINCT model_id FROM {{schema}}.{table}")}
        assert kept == {"m3", "m4"}, table
    with pytest.raises(ValueError, match="keep must be >= 1"):
        _publish(backend, small_model, "m5", keep=0)


def test_retention_never_deletes_a_rolled_back_current_model(backend, small_model):
    for k in range(1, 4):
        _publish(backend, small_model, f"m{k}", keep=3)
    open_warehouse(backend.target).rollback(to="m1", schema=backend.schema)
    open_warehouse(backend.target).materialize_recommendations(schema=backend.schema)  # reads m1
    _publish(backend, small_model, "m4", keep=1)  # keeps m4 (new current) only
    assert backend.current() == ["m4"]
    assert {r[0] for r in backend.fetch("SELECT model_id FROM {schema}.model_runs")} == {"m4"}


def test_downstream_queries(backend, small_model):
    _publish(backend, small_model, "m1")
    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    top = _query(backend, "top_n_for_user", user_id=data.user_ids[3], n=3)
    assert [r[0] for r in top] == [1, 2, 3]
    published = backend.fetch("SELECT item_id, score FROM {schema}.predictions "
                              "WHERE user_id = ? ORDER BY rank LIMIT 3", data.user_ids[3])
    assert [(r[1], r[2]) for r in top] == published
    # the SQL score is the model's own prediction, for pairs in and out of the top-N
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, model.n_users, 20), rng.integers(0, model.n_items, 20)
    want = model.predict(users.astype(np.int32), items.astype(np.int32))
    for u, i, w in zip(users, items, want):
        (score,), = _query(backend, "score_pair", user_id=data.user_ids[int(u)],
                           item_id=data.item_ids[int(i)])
        assert abs(score - w) < 1e-4
    item = data.item_ids[5]
    similar = _query(backend, "similar_items", item_id=item, n=5)
    assert len(similar) == 5 and item not in [r[0] for r in similar]
    sims = [r[1] for r in similar]
    assert sims == sorted(sims, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in sims)
    factors = model.params.item_factors
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    want_sim = unit @ unit[5]
    index = {v: k for k, v in enumerate(data.item_ids.to_list())}
    np.testing.assert_allclose(sims, [want_sim[index[r[0]]] for r in similar], atol=1e-5)
    _assert_cold_start(backend, small_model["matrix_dir"])
    counts = np.bincount(data.train.items)
    assert _query(backend, "cold_start", n=1) == [(1, data.item_ids[int(counts.argmax())],
                                                   counts.max())]


def test_cold_start_lists_are_kept_with_their_model_and_follow_rollback(backend, small_model,
                                                                        tmp_path):
    """Counts come from each model's own training data and stay with it in the tables."""
    from factorflow.stages.build import build_matrices
    from factorflow.stages.train import train_factors

    other = build_matrices(small_model["ratings_path"], tmp_path / "matrix", seed=3,
                           valid_fraction=0.4)["matrix_dir"]
    assert _expected_cold_start(other, 10) != _expected_cold_start(small_model["matrix_dir"], 10)
    other_model = train_factors(other, tmp_path / "model", top_n=3, rank=3, epochs=2,
                                optimizer="adam")["model_dir"]
    _publish(backend, small_model, "m1")
    publish_model(backend.target, model_id="m2", model_dir=other_model, matrix_dir=other,
                  schema=backend.schema)
    _assert_cold_start(backend, other)
    open_warehouse(backend.target).rollback(to="m1", schema=backend.schema)
    _assert_cold_start(backend, small_model["matrix_dir"])
    _publish(backend, small_model, "m3", keep=1)  # retention takes m2's statistics with it
    assert {r[0] for r in backend.fetch("SELECT DISTINCT model_id FROM {schema}.item_factors")} \
        == {"m3"}
    _assert_cold_start(backend, small_model["matrix_dir"])


def test_materialized_recommendations_follow_the_current_model(backend, small_model):
    _publish(backend, small_model, "m1")
    summary = open_warehouse(backend.target).materialize_recommendations(schema=backend.schema)
    assert summary["rows"] == backend.count("current_predictions") > 0
    assert {r[0] for r in backend.fetch(
        "SELECT DISTINCT model_id FROM {schema}.recommendations_daily")} == {"m1"}


def test_queries_before_any_publish_are_a_clear_lookup_error(backend):
    with pytest.raises(LookupError, match="no model published"):
        _query(backend, "top_n_for_user", user_id=1, n=3)


def test_the_wide_column_layout_gives_the_same_scores(backend, small_model):
    from factorflow.warehouse.base import wide_factors_sql

    _publish(backend, small_model, "m1")
    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    for which in ("user", "item"):
        backend.execute(wide_factors_sql(rank=model.rank, which=which, schema=backend.schema))
    dot = " + ".join(f"u.f{k} * i.f{k}" for k in range(1, model.rank + 1))
    [(score,)] = backend.fetch(
        f"SELECT m.global_mean + u.bias + i.bias + {dot} FROM {{schema}}.current_model m "
        "JOIN {schema}.current_user_factors_wide u ON u.user_id = ? "
        "JOIN {schema}.current_item_factors_wide i ON i.item_id = ?",
        data.user_ids[2], data.item_ids[7])
    want = model.predict(np.array([2], np.int32), np.array([7], np.int32))[0]
    assert abs(score - want) < 1e-4
    with pytest.raises(ValueError, match="which must be"):
        wide_factors_sql(rank=3, which="users")


def test_current_factor_views_have_the_current_models_width(backend, small_model, tmp_path):
    """DuckDB: FLOAT[k] views over FLOAT[] tables (kept models may differ in k); Postgres: real[]."""
    from factorflow.stages.train import train_factors

    _publish(backend, small_model, "wide")
    wide = FactorModel.load(small_model["model_dir"] / MODEL_FILE).rank
    narrow_dir = train_factors(small_model["matrix_dir"], tmp_path / "narrow", top_n=5, rank=3,
                               epochs=3, optimizer="adam")["model_dir"]
    publish_model(backend.target, model_id="narrow", model_dir=narrow_dir,
                  matrix_dir=small_model["matrix_dir"], schema=backend.schema)
    want_type = {"duckdb": "FLOAT[{}]", "postgres": "ARRAY"}[backend.kind]
    for model_id, width in (("narrow", 3), ("wide", wide)):
        if model_id == "wide":
            open_warehouse(backend.target).rollback(to="wide", schema=backend.schema)
        assert backend.current() == [model_id]
        assert backend.column_type("current_item_factors", "factors") == want_type.format(width)
        assert {len(f) for (f,) in backend.fetch("SELECT factors FROM {schema}.current_user_factors")} \
            == {width}
        assert len(_query(backend, "similar_items", item_id=load_matrices(
            small_model["matrix_dir"]).item_ids[0], n=3)) == 3


def test_sweep_candidates_are_recorded_and_retired_with_their_model(backend, small_model):
    model_dir = small_model["model_dir"]
    publish_model(backend.target, model_id="sweep", model_dir=model_dir,
                  matrix_dir=small_model["matrix_dir"], schema=backend.schema,
                  candidates=[model_dir, model_dir])
    rows = backend.fetch("SELECT model_id, candidate_of FROM {schema}.model_runs ORDER BY model_id")
    assert rows == [("sweep", None), ("sweep/candidate-0", "sweep"), ("sweep/candidate-1", "sweep")]
    assert backend.current() == ["sweep"]
    with pytest.raises(LookupError, match="no kept model"):  # candidates have no factors
        open_warehouse(backend.target).rollback(to="sweep/candidate-0", schema=backend.schema)
    _publish(backend, small_model, "m2", keep=5)  # candidates do not count against keep
    assert backend.count("model_runs") == 4
    _publish(backend, small_model, "m3", keep=1)  # retiring "sweep" retires its candidates
    assert backend.fetch("SELECT model_id FROM {schema}.model_runs") == [("m3",)]


#: An earlier release's item views: no item statistics, "popular" meaning highest item bias.
OLD_ITEM_VIEWS = (
    "CREATE VIEW {schema}.current_item_factors AS SELECT f.model_id, f.item_id, f.bias, f.factors "
    "FROM {schema}.item_factors f JOIN {schema}.current_pointer p "
    "ON p.model_id = f.model_id AND p.name = 'current'",
    "CREATE VIEW {schema}.current_popular_items AS "
    "SELECT f.item_id, (m.global_mean + f.bias)::real AS score, "
    "row_number() OVER (ORDER BY f.bias DESC, f.item_id)::integer AS rank "
    "FROM {schema}.current_item_factors f CROSS JOIN {schema}.current_model m",
)


def test_item_tables_from_an_earlier_release_are_migrated(backend, small_model):
    _publish(backend, small_model, "old")
    # as published before the item statistics existed: no columns, the old views
    for view in ("current_top_rated_items", "current_popular_items", "current_item_factors"):
        backend.execute(f"DROP VIEW {{schema}}.{view}")
    for column in ("n_ratings", "mean_rating"):
        backend.execute(f"ALTER TABLE {{schema}}.item_factors DROP COLUMN {column}")
    for sql in OLD_ITEM_VIEWS:
        backend.execute(sql)
    _publish(backend, small_model, "new")
    _assert_cold_start(backend, small_model["matrix_dir"])
    # the old model has no statistics: its lists are empty, its factors still there
    open_warehouse(backend.target).rollback(to="old", schema=backend.schema)
    assert _query(backend, "cold_start", n=3) == _query(backend, "cold_start_top_rated", n=3) == []
    assert backend.count("current_item_factors") == small_model["matrix"]["n_items"]
    open_warehouse(backend.target).rollback(to="new", schema=backend.schema)
    _assert_cold_start(backend, small_model["matrix_dir"])


def test_postgres_tables_from_an_earlier_release_are_migrated(postgres_backend, small_model):
    backend = postgres_backend
    _publish(backend, small_model, "old")
    # as published before sweeps existed: no candidate_of column (its views go with it)
    backend.execute("ALTER TABLE {schema}.model_runs DROP COLUMN candidate_of CASCADE")
    _publish(backend, small_model, "new")
    assert backend.current() == ["new"]
    assert backend.fetch("SELECT model_id, candidate_of FROM {schema}.model_runs ORDER BY model_id") \
        == [("new", None), ("old", None)]
    assert backend.count("current_predictions") > 0
