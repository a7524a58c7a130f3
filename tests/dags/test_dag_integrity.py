"""Every DAG file parses cleanly, lightly, and carries the settings we rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dags.helpers import load_dags

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ("jax", "polars", "great_expectations", "optax", "pandas")

pytestmark = pytest.mark.unit


def _parse_in_fresh_interpreter() -> dict:
    """Fill a DagBag in a new process and report what the parse imported."""
    code = f"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
started = time.perf_counter()
bag = DagBag(dag_folder={str(DAGS)!r})
seconds = time.perf_counter() - started
print(json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "dags": sorted(bag.dags),
    "heavy": [m for m in {HEAVY!r} if m in sys.modules],
    "seconds": seconds,
}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def parsed() -> dict:
    return _parse_in_fresh_interpreter()


def test_dag_files_import_without_errors(parsed):
    assert parsed["errors"] == {}
    assert "factorize_ratings" in parsed["dags"]


def test_parsing_imports_nothing_heavy(parsed):
    print(f"DagBag fill took {parsed['seconds']:.2f} s")
    assert parsed["heavy"] == [], f"DAG parsing imported {parsed['heavy']}"


@pytest.fixture(scope="module")
def dags():
    return load_dags()


def test_every_dag_has_tags_retries_and_owner(dags):
    assert set(dags) == {"factorize_ratings", "recommendations_daily", "tune_factorization",
                         "fold_in_new_users"}
    for dag_id, dag in dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.owner == "factorflow", f"{dag_id}.{task.task_id} is owned by {task.owner!r}"


def test_factorize_ratings_shape(dags):
    dag = dags["factorize_ratings"]
    order = [t.task_id for t in dag.topological_sort()]
    assert set(order) == {"extract", "validate", "build", "previous_model", "train", "publish"}
    assert order.index("extract") < order.index("validate") < order.index("build")
    assert order[-2:] == ["train", "publish"]
    assert dag.get_task("train").upstream_task_ids == {"build", "previous_model"}
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.get_task("train").queue == "gpu"
    assert all(dag.get_task(t).queue != "gpu"
               for t in ("extract", "validate", "build", "previous_model", "publish"))
    assert dag.params["warm_start"] is True
    for name in ("source_table", "rank", "epochs", "learning_rate", "reg", "seed"):
        assert name in dag.params
    assert dag.params.get_param("rank").schema["maximum"] == 1024


def test_fold_in_new_users_shape(dags):
    dag = dags["fold_in_new_users"]
    assert [t.task_id for t in dag.topological_sort()] == [
        "previous_model", "extract", "fold_in", "publish"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert all(t.queue != "gpu" for t in dag.tasks)  # a fold-in is a few small solves
    assert {"warehouse", "source_table", "schema", "top_n", "keep"} <= set(dag.params)
