"""The train stage: bounded-memory scoring, scores on the rating scale, progress, out of memory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from factorflow.engine.metrics import regression_metrics
from factorflow.engine.triplets import Triplets
from factorflow.stages.build import load_matrices
from factorflow.engine.memory import OutOfMemoryError
from factorflow.engine.model import FactorModel
from factorflow.stages.train import (
    METRICS_FILE,
    MODEL_FILE,
    RECOMMENDATIONS_FILE,
    rating_scale,
    train_factors,
)

pytestmark = pytest.mark.integration


def _artifacts(model_dir):
    metrics = json.loads((model_dir / METRICS_FILE).read_text())
    with np.load(model_dir / RECOMMENDATIONS_FILE) as rec:
        return metrics, FactorModel.load(model_dir / MODEL_FILE), rec["items"], rec["scores"]


def _assert_on_scale_in_model_order(model_dir, matrix_dir, lo, hi, top_n):
    """Published scores lie in [lo, hi], in the order of the model's unclipped scores."""
    metrics, model, items, scores = _artifacts(model_dir)
    data = load_matrices(matrix_dir)
    assert (metrics["rating_min"], metrics["rating_max"]) == (lo, hi)
    real = items >= 0
    assert real.any() and np.all((scores[real] >= lo) & (scores[real] <= hi))
    raw_items, raw = model.recommend(np.arange(model.n_users), N=top_n,
                                     seen=Triplets.concat(data.train, data.valid))
    np.testing.assert_array_equal(items, raw_items)
    np.testing.assert_allclose(scores[real], np.clip(raw[real], lo, hi), rtol=1e-6)
    return raw[real]


def test_scores_on_the_observed_scale_and_metrics_of_the_published_model(small_model):
    model_dir, matrix_dir = small_model["model_dir"], small_model["matrix_dir"]
    _assert_on_scale_in_model_order(model_dir, matrix_dir, 1.0, 5.0, top_n=5)
    metrics, model, _, _ = _artifacts(model_dir)
    data = load_matrices(matrix_dir)
    for name, split in (("train", data.train), ("valid", data.valid)):
        want = regression_metrics(model.predict(split.users, split.items), split.ratings)
        assert metrics[f"{name}_rmse"] == pytest.approx(want["rmse"], rel=1e-9)
        assert metrics[f"{name}_mae"] == pytest.approx(want["mae"], rel=1e-9)
    # the Gibbs model is published cut to its strong directions, at most rank x samples
    assert metrics["width"] == model.rank <= metrics["rank"] * 16
    assert small_model["summary"]["width"] == model.rank
    assert set(metrics["step_seconds"]) == {"load", "fit", "score", "save", "recommend", "curves"}


def test_a_given_scale_clips_after_ranking_and_progress_is_logged(small_model, tmp_path):
    lines: list[str] = []
    summary = train_factors(small_model["matrix_dir"], tmp_path / "model", top_n=5, rank=8,
                            epochs=3, rating_min=3.5, rating_max=4.0, log_fn=lines.append)
    raw = _assert_on_scale_in_model_order(tmp_path / "model", small_model["matrix_dir"],
                                          3.5, 4.0, top_n=5)
    assert (raw > 4.0).any()  # the scale bites: those read 4.0, still ranked as the model says
    assert summary["width"] >= 1
    for what in ("train: scoring the train split, ratings", "train: scoring the valid split",
                 "train: top-N lists, users 400 / 400 (100.0%)"):
        assert any(line.startswith(what) for line in lines), (what, lines)


def test_out_of_memory_is_a_typed_error_naming_the_step(small_model, tmp_path):
    """A real allocation failure: factors of rank 2^36 ask XLA for 12800 GiB (and fail at once)."""
    with pytest.raises(OutOfMemoryError, match=r"while fitting the model \(rank 68719476736, adam\) "
                       r"\(an allocation of [\d.]+ GiB\).*lower the rank") as caught:
        train_factors(small_model["matrix_dir"], tmp_path / "model", rank=1 << 36, epochs=1,
                      optimizer="adam")
    assert caught.value.step.startswith("fitting the model") and caught.value.requested > 1 << 40
    assert not (tmp_path / "model").exists()


@pytest.mark.unit
def test_rating_scale_defaults_and_checks():
    summary = {"rating_min": 0.5, "rating_max": 5.0}
    assert rating_scale(summary) == (0.5, 5.0)
    assert rating_scale(summary, 1, None) == (1.0, 5.0)
    for bad in ((5.0, 1.0), (float("nan"), 5.0), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="rating_min <= rating_max"):
            rating_scale(summary, *bad)


def test_sql_pair_score_is_clipped_to_the_runs_scale(backend, small_model):
    """score_pair clips the model's prediction to the run's rating_min / rating_max params."""
    from factorflow.stages.publish import publish_model
    from factorflow.warehouse import open_warehouse

    model = FactorModel.load(small_model["model_dir"] / MODEL_FILE)
    data = load_matrices(small_model["matrix_dir"])
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, model.n_users, 30), rng.integers(0, model.n_items, 30)
    raw = model.predict(users, items)
    lo, hi = np.quantile(raw, [0.25, 0.75])  # a scale half the pairs fall outside

    def scores(model_id, params):
        publish_model(backend.target, model_id=model_id, model_dir=small_model["model_dir"],
                      matrix_dir=small_model["matrix_dir"], schema=backend.schema,
                      run_info={"params": params})
        warehouse = open_warehouse(backend.target)
        return np.array([warehouse.run_query("downstream.sql", "score_pair", schema=backend.schema,
                                             params={"user_id": data.user_ids[int(u)],
                                                     "item_id": data.item_ids[int(i)]})[1][0][0]
                         for u, i in zip(users, items)])

    np.testing.assert_allclose(scores("scaled", {"rating_min": float(lo), "rating_max": float(hi)}),
                               np.clip(raw, lo, hi), atol=1e-4)
    np.testing.assert_allclose(scores("no-scale", {}), raw, atol=1e-4)  # nothing to clip to


@pytest.mark.parametrize("how", ["half", "garbage"])
def test_a_damaged_build_artifact_names_the_build_task(small_model, tmp_path, how):
    """The train task reads a truncated or garbage train.npz: one line, not retried, nothing written."""
    from factorflow.airflow.failures import classify
    from factorflow.engine.artifacts import ArtifactError
    from tests.stages.test_build import copy_matrix, damage

    matrix = copy_matrix(small_model, tmp_path)
    damage(matrix / "train.npz", how)
    with pytest.raises(ArtifactError) as info:
        train_factors(matrix, tmp_path / "model", rank=4, epochs=2)
    assert str(info.value) == (f"{matrix / 'train.npz'} is not a readable .npz (truncated?): "
                               "clear the `build` task to write it again")
    assert classify(info.value) == "deterministic"
    assert not (tmp_path / "model").exists()


def test_the_model_directory_holds_no_temporary_files(small_model):
    names = sorted(p.name for p in small_model["model_dir"].iterdir())
    assert not [n for n in names if n.endswith(".tmp")], names
    assert {MODEL_FILE, METRICS_FILE, RECOMMENDATIONS_FILE} <= set(names)


@pytest.mark.parametrize("damage", ["no model", "no id maps"])
def test_a_previous_model_that_cannot_be_read_gives_a_cold_start_saying_why(
        small_model, small_warehouse, tmp_path, damage):
    """The previous_model export read back by ``train``: damaged, it is not a failure."""
    import shutil

    from factorflow.stages.current_model import export_current_model
    from tests.warehouses import publish_small_model

    shutil.copy(small_warehouse, tmp_path / "wh.duckdb")
    publish_small_model(tmp_path / "wh.duckdb", small_model, "m1")
    previous = export_current_model(tmp_path / "wh.duckdb", tmp_path / "previous")["model_dir"]
    kwargs = dict(top_n=5, rank=8, epochs=16, seed=0)
    warm = train_factors(small_model["matrix_dir"], tmp_path / "warm", init_from=previous,
                         **kwargs)
    assert json.loads((tmp_path / "warm" / "metrics.json").read_text())["warm_start_from"] == "m1"
    gone = "model.npz" if damage == "no model" else "users.parquet"
    (tmp_path / "previous" / gone).unlink()
    lines: list[str] = []
    cold = train_factors(small_model["matrix_dir"], tmp_path / "cold", init_from=previous,
                         log_fn=lines.append, **kwargs)
    assert any("not possible" in line and "cold start" in line for line in lines), lines
    metrics = json.loads((tmp_path / "cold" / "metrics.json").read_text())
    assert metrics["warm_start_from"] is None and metrics["epochs_run"] == 16
    assert json.loads((tmp_path / "warm" / "metrics.json").read_text())["epochs_run"] == 2
    assert warm["model_dir"] and cold["model_dir"]
