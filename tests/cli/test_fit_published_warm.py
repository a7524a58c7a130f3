"""``factorflow fit --init-from MODEL_ID --warehouse W``: a warm start from a published model."""

from __future__ import annotations

import json
import shutil

import duckdb
import pytest

from tests.cli.test_main import run_cli
from tests.warehouses import publish_small_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def published(small_warehouse, small_model, tmp_path_factory):
    """A warehouse holding the small model as ``m1``, and its ratings as a CSV file."""
    d = tmp_path_factory.mktemp("published")
    warehouse = d / "wh.duckdb"
    shutil.copy(small_warehouse, warehouse)
    publish_small_model(warehouse, small_model, "m1")
    ratings = d / "ratings.csv"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        con.execute(f"COPY (SELECT user_id, item_id, rating FROM raw.ratings) TO '{ratings}' "
                    "(HEADER)")
    return warehouse, ratings


@pytest.mark.parametrize("model_id", ["m1", "current"])
def test_a_published_model_is_read_back_and_warm_starts_the_fit(published, model_id):
    warehouse, ratings = published
    proc = run_cli("fit", "--train", str(ratings), "--rank", "8", "--epochs", "16",
                   "--init-from", model_id,
                   "--warehouse", str(warehouse), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["warm_start_from"] == "m1"  # the published id, not the temporary copy
    assert result["epochs_run"] == 2  # a warm Gibbs run: an eighth of the sweeps
    assert "read model m1 (" in proc.stderr and "warm start from" in proc.stderr


def test_an_unknown_model_id_gives_a_cold_start_saying_why(published):
    warehouse, ratings = published
    proc = run_cli("fit", "--train", str(ratings), "--epochs", "4", "--init-from", "nope",
                   "--warehouse", str(warehouse), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["warm_start_from"] is None
    assert "no kept model 'nope'" in proc.stderr and "cold start" in proc.stderr
