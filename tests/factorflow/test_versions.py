"""Versioned publishing: current_* views, retention, rollback, downstream SQL."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from factorflow.cli import main
from factorflow.matrix import load_matrices
from factorflow.model import FactorModel
from factorflow.paths import read_queries
from factorflow.training_run import MODEL_FILE
from factorflow.warehouse import publish_model, rollback

pytestmark = pytest.mark.integration


def _publish(warehouse, small_model, model_id, keep=5):
    return publish_model(warehouse, model_id=model_id, model_dir=small_model["model_dir"],
                         matrix_dir=small_model["matrix_dir"], keep=keep)


def _current(con):
    return con.execute("SELECT model_id FROM factorflow.current_model").fetchall()


def _query(con, name, **params):
    sql = read_queries("downstream.sql")[name].format(schema='"factorflow"')
    return con.execute(sql, params).fetchall()


def test_views_follow_the_newest_model_and_rollback_repoints_them(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    _publish(wh, small_model, "m1")
    _publish(wh, small_model, "m2")
    with duckdb.connect(str(wh), read_only=True) as con:
        assert _current(con) == [("m2",)]
        n_users = con.execute("SELECT count(*) FROM factorflow.current_user_factors").fetchone()[0]
        assert n_users == small_model["matrix"]["n_users"]
    assert main(["rollback", "--warehouse", str(wh), "--to", "m1"]) == 0
    with duckdb.connect(str(wh), read_only=True) as con:
        assert _current(con) == [("m1",)]
        ids = {r[0] for r in con.execute("SELECT DISTINCT model_id FROM factorflow.current_predictions").fetchall()}
        assert ids == {"m1"}
    with pytest.raises(LookupError, match="no kept model 'm9'"):
        rollback(wh, to="m9")
    with duckdb.connect(str(wh), read_only=True) as con:
        assert _current(con) == [("m1",)]


def test_retention_keeps_the_newest_k(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    for k in range(1, 5):
        _publish(wh, small_model, f"m{k}", keep=2)
    with duckdb.connect(str(wh), read_only=True) as con:
        for table in ("model_runs", "user_factors", "item_factors", "predictions"):
            kept = {r[0] for r in con.execute(f"SELECT DISTINCT model_id FROM factorflow.{table}").fetchall()}
            assert kept == {"m3", "m4"}, table
    with pytest.raises(ValueError, match="keep must be >= 1"):
        _publish(wh, small_model, "m5", keep=0)


def test_downstream_queries(tmp_path, small_model):
    wh = tmp_path / "wh.duckdb"
    _publish(wh, small_model, "m1")
    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    user, item = data.user_ids[3], data.item_ids[5]
    with duckdb.connect(str(wh), read_only=True) as con:
        top = _query(con, "top_n_for_user", user_id=user, n=3)
        assert [r[0] for r in top] == [1, 2, 3]
        (score,), = _query(con, "score_pair", user_id=user, item_id=item)
        # the SQL score is the model's own prediction
        want = model.predict(np.array([3], np.int32), np.array([5], np.int32))[0]
        assert abs(score - want) < 1e-4
        similar = _query(con, "similar_items", item_id=item, n=5)
        assert len(similar) == 5 and item not in [r[0] for r in similar]
        sims = [r[1] for r in similar]
        assert sims == sorted(sims, reverse=True) and all(-1.0001 <= s <= 1.0001 for s in sims)
        cold = _query(con, "cold_start", n=4)
        assert [r[0] for r in cold] == [1, 2, 3, 4] and all(r[2] is not None for r in cold)
