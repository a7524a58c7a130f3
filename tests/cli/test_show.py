"""`factorflow show`: the demo's closing query, for integer and string ids."""

from __future__ import annotations

import pytest

from factorflow.cli.main import main
from factorflow.stages.publish import publish_model

pytestmark = pytest.mark.integration


def test_show_prints_metrics_and_top_items(tmp_path, small_model, capsys):
    warehouse = tmp_path / "wh.duckdb"
    publish_model(warehouse, model_id="m1", model_dir=small_model["model_dir"],
                  matrix_dir=small_model["matrix_dir"])
    assert main(["show", "--warehouse", str(warehouse), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "current model m1" in out and "validation RMSE" in out and "bias-only RMSE" in out
    assert out.count("\n     ") >= 3  # three ranked rows
    user = out.split("recommendations for user ")[1].split(":")[0]
    assert main(["show", "--warehouse", str(warehouse), "--user", user, "--json"]) == 0
    assert '"rank": 5' in capsys.readouterr().out


def test_show_on_an_empty_warehouse_is_a_clear_error(tmp_path, capsys):
    import duckdb

    warehouse = tmp_path / "empty.duckdb"
    duckdb.connect(str(warehouse)).close()
    assert main(["show", "--warehouse", str(warehouse)]) == 2
    assert "no model published" in capsys.readouterr().err
