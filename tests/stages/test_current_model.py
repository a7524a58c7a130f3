"""The published model read back (warm start, fold-in), and the quick new-users check."""

from __future__ import annotations

import shutil

import duckdb
import numpy as np
import pytest

from factorflow.stages.current_model import count_new_users, export_current_model
from tests.warehouses import publish_small_model

pytestmark = pytest.mark.integration


@pytest.fixture
def warehouse(small_warehouse, small_model, tmp_path):
    """The small ratings table with the small model published twice: m1, then m2 (current)."""
    path = tmp_path / "wh.duckdb"
    shutil.copy(small_warehouse, path)
    publish_small_model(path, small_model, "m1")
    publish_small_model(path, small_model, "m2")
    return path


def test_nothing_published_is_a_reason_not_an_error(small_warehouse, tmp_path):
    shutil.copy(small_warehouse, tmp_path / "wh.duckdb")
    found = export_current_model(tmp_path / "wh.duckdb", tmp_path / "out", log_fn=print)
    assert found["model_dir"] is None and "schema factorflow" in found["reason"]
    assert count_new_users(tmp_path / "wh.duckdb", "raw.ratings") == (None, 0)


def test_the_current_or_a_named_model_loads_back_as_it_was_trained(warehouse, small_model,
                                                                   tmp_path):
    from factorflow.engine import FactorModel

    trained = FactorModel.load(small_model["model_dir"] / "model.npz")
    for model_id, expected in ((None, "m2"), ("m1", "m1")):
        found = export_current_model(warehouse, tmp_path / str(model_id), model_id=model_id)
        assert found["model_id"] == expected
        back = FactorModel.load(tmp_path / str(model_id) / "model.npz")
        for a, b in zip(back.params, trained.params):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
        assert back.config == trained.config and back.fold_in_spec is not None
    missing = export_current_model(warehouse, tmp_path / "nope", model_id="nope")
    assert missing["model_dir"] is None and "no kept model 'nope'" in missing["reason"]


def test_new_users_are_counted_with_one_query(warehouse):
    assert count_new_users(warehouse, "raw.ratings") == ("m2", 0)
    with duckdb.connect(str(warehouse)) as con:
        con.execute("INSERT INTO raw.ratings SELECT user_id + 1000000, item_id, rating, rated_at "
                    "FROM raw.ratings WHERE user_id IN (SELECT DISTINCT user_id FROM raw.ratings "
                    "ORDER BY user_id LIMIT 3)")
    assert count_new_users(warehouse, "raw.ratings") == ("m2", 3)


def test_a_file_source_is_refused_naming_why(warehouse):
    with pytest.raises(ValueError, match="source_table to be a table of the warehouse"):
        count_new_users(warehouse, "/data/ratings.parquet")
