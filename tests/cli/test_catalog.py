"""The model-runs catalog on both back ends: per-stage wall time and peak memory,
runs recorded before peak memory existed, and warehouses migrated in place."""

from __future__ import annotations

import json

import pytest

from factorflow.cli.catalog import list_runs
from tests.warehouses import publish_small_model

pytestmark = pytest.mark.integration

#: What the DAGs pass: stage -> its task's seconds and peak RSS.
FIGURES = {"extract": {"seconds": 1.5, "peak_rss_mb": 310.2},
           "validate": {"seconds": 4.0, "peak_rss_mb": 580.0},
           "build": {"seconds": 2.25, "peak_rss_mb": 640.5},
           "train": {"seconds": 30.0, "peak_rss_mb": 1200.0}}


def _publish(backend, small_model, model_id, timings):
    publish_small_model(backend.target, small_model, model_id, schema=backend.schema,
                        run_info={"dag_id": "factorize_ratings", "timings": timings})


def _stages(backend, model_id):
    return {r["model_id"]: r for r in list_runs(backend.target, schema=backend.schema)}[model_id][
        "stages"]


def test_each_stage_keeps_its_seconds_and_peak_memory(backend, small_model):
    _publish(backend, small_model, "m1", FIGURES)
    [(timings, peaks)] = backend.fetch("SELECT timings, peak_rss_mb FROM {schema}.model_runs")
    as_dict = (lambda v: json.loads(v) if isinstance(v, str) else v)
    assert as_dict(timings) == {s: f["seconds"] for s, f in FIGURES.items()}
    assert as_dict(peaks) == {s: f["peak_rss_mb"] for s, f in FIGURES.items()}
    stages = _stages(backend, "m1")
    assert list(stages) == ["extract", "validate", "build", "train"]  # pipeline order
    assert stages == FIGURES
    json.dumps(list_runs(backend.target, schema=backend.schema), default=str)


def test_runs_from_before_peak_memory_stay_readable_and_the_table_is_migrated(backend, small_model):
    _publish(backend, small_model, "old", {s: f["seconds"] for s, f in FIGURES.items()})
    assert _stages(backend, "old")["train"] == {"seconds": 30.0, "peak_rss_mb": None}
    # as an earlier release left it: no peak_rss_mb column (Postgres drops the views with it)
    cascade = " CASCADE" if backend.kind == "postgres" else ""
    backend.execute(f"ALTER TABLE {{schema}}.model_runs DROP COLUMN peak_rss_mb{cascade}")
    assert _stages(backend, "old")["build"] == {"seconds": 2.25, "peak_rss_mb": None}
    _publish(backend, small_model, "new", FIGURES)
    assert _stages(backend, "new") == FIGURES
    assert _stages(backend, "old")["train"] == {"seconds": 30.0, "peak_rss_mb": None}
    assert backend.current() == ["new"]
