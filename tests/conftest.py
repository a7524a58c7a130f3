"""Shared test set-up: the same environment `make test` exports, and small data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
#: The tests' own Airflow home and metadata DB: the demo's `.airflow/` (what a
#: person sees in the UI after `make demo`) never gets a test's runs.
TEST_AIRFLOW_HOME = ROOT / ".airflow-test"

# Always the tests' own home, DB, warehouse default and artifacts, whatever the
# shell exports (the Makefile exports the demo's for `make demo`).
os.environ.update({
    "AIRFLOW_HOME": str(TEST_AIRFLOW_HOME),
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{TEST_AIRFLOW_HOME / 'airflow.db'}",
    "FACTORFLOW_WAREHOUSE": str(TEST_AIRFLOW_HOME / "warehouse.duckdb"),
    "FACTORFLOW_ARTIFACTS_DIR": str(TEST_AIRFLOW_HOME / "artifacts"),
})
# The Makefile exports these; set them here too so a bare `pytest` behaves the same.
for key, value in {
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "JAX_PLATFORMS": "cpu",
    "GX_ANALYTICS_ENABLED": "false",
    # Confinement of trigger confs: tests keep warehouses in pytest's temporary
    # folders and use the custom losses of tests/custom_losses.py.
    "FACTORFLOW_DATA_ROOTS": os.pathsep.join([tempfile.gettempdir(), str(ROOT / "data"),
                                              str(TEST_AIRFLOW_HOME)]),
    "FACTORFLOW_LOSS_MODULES": "tests.custom_losses",
}.items():
    os.environ.setdefault(key, value)



def _migrate_test_metadata_db() -> None:
    """``airflow db migrate`` into the tests' home when its DB is missing (a bare `pytest`)."""
    if (TEST_AIRFLOW_HOME / "airflow.db").exists():
        return
    import subprocess
    import sys

    TEST_AIRFLOW_HOME.mkdir(exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)


_migrate_test_metadata_db()

#: A demo warehouse small enough for many tests, big enough to learn from.
SMALL_DEMO = {"n_users": 400, "n_items": 300, "n_ratings": 24_000, "seed": 7}


@pytest.fixture(scope="session")
def small_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB file holding ``raw.ratings`` from the demo generator (do not modify)."""
    from factorflow.warehouse.demo import write_demo_warehouse

    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    write_demo_warehouse(path, **SMALL_DEMO)
    return path


@pytest.fixture(scope="session")
def small_ratings_parquet(small_warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small demo table extracted to Parquet."""
    from factorflow.stages.extract import extract_ratings

    out = tmp_path_factory.mktemp("extract")
    return Path(extract_ratings(small_warehouse, "raw.ratings", out)["path"])


@pytest.fixture(scope="session")
def small_model(small_ratings_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Build + train on the small demo table: ``{"matrix_dir", "model_dir", "summary"}``."""
    from factorflow.stages.build import build_matrices
    from factorflow.stages.train import train_factors

    root = tmp_path_factory.mktemp("model")
    matrix = build_matrices(small_ratings_parquet, root / "matrix", seed=0)
    summary = train_factors(matrix["matrix_dir"], root / "model", top_n=5, rank=8, epochs=40)
    return {"matrix_dir": Path(matrix["matrix_dir"]), "model_dir": Path(summary["model_dir"]),
            "summary": summary, "matrix": matrix, "ratings_path": small_ratings_parquet}


def _backend(kind: str, tmp_path: Path):
    from tests.warehouses import drop_backend, make_backend, postgres_skip_reason

    if kind == "postgres" and (reason := postgres_skip_reason()):
        pytest.skip(reason)
    backend = make_backend(kind, tmp_path)
    yield backend
    drop_backend(backend)


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh warehouse on each back end (see tests/warehouses.py)."""
    yield from _backend(request.param, tmp_path)


@pytest.fixture
def postgres_backend(tmp_path: Path):
    """A fresh schema in the test PostgreSQL server (skips without one)."""
    yield from _backend("postgres", tmp_path)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001
    """One closing line saying what was skipped and why (grouped by reason)."""
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ").strip()
        reasons[reason] = reasons.get(reason, 0) + 1
    if not reasons:
        terminalreporter.write_line("factorflow: nothing skipped")
        return
    groups = "; ".join(f"{reason} ({n})" for reason, n in
                       sorted(reasons.items(), key=lambda item: -item[1]))
    terminalreporter.write_line(f"factorflow: {sum(reasons.values())} skipped: {groups}")
