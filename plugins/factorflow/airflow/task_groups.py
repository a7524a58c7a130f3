"""Task groups shared by the factorflow DAGs (wiring helpers, no work).

Called inside a ``with DAG(...)`` block; the tasks read the DAG's Params from
:mod:`factorflow.airflow.params`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from factorflow.airflow.model_operators import PreviousModelOperator
from factorflow.airflow.operators import (
    BuildMatricesOperator,
    ExtractRatingsOperator,
    ValidateRatingsOperator,
)


class Ingest(NamedTuple):
    extract: ExtractRatingsOperator
    validate: ValidateRatingsOperator
    build: BuildMatricesOperator


def extract_task(artifacts_dir: str) -> ExtractRatingsOperator:
    """The ``extract`` task, wired to the DAG's Params (a DAG without ``source_conn_id``
    reads the source from the warehouse)."""
    return ExtractRatingsOperator(
        task_id="extract",
        warehouse="{{ params.warehouse }}",
        warehouse_conn_id="{{ params.get('source_conn_id') or params.warehouse_conn_id }}",
        source_table="{{ params.source_table }}",
        artifacts_dir=artifacts_dir,
    )


def previous_model_task(artifacts_dir: str, **kwargs: Any) -> PreviousModelOperator:
    """The ``previous_model`` task reading the current model of the run's schema
    (kwargs: :class:`PreviousModelOperator`'s, e.g. ``enabled``)."""
    return PreviousModelOperator(
        task_id="previous_model",
        warehouse="{{ params.warehouse }}",
        warehouse_conn_id="{{ params.warehouse_conn_id }}",
        schema="{{ params.schema }}",
        artifacts_dir=artifacts_dir,
        **kwargs,
    )


def ingest(artifacts_dir: str) -> Ingest:
    """extract >> validate >> build, wired to the DAG's Params."""
    extract = extract_task(artifacts_dir)
    validate = ValidateRatingsOperator(
        task_id="validate",
        ratings_path=extract.output["path"],
        rating_min="{{ params.rating_min }}",
        rating_max="{{ params.rating_max }}",
        min_rows="{{ params.min_rows }}",
    )
    build = BuildMatricesOperator(
        task_id="build",
        ratings_path=extract.output["path"],
        artifacts_dir=artifacts_dir,
        valid_fraction="{{ params.valid_fraction }}",
        seed="{{ params.seed }}",
    )
    extract >> validate >> build
    return Ingest(extract, validate, build)


def stage_timings(**tasks: Any) -> dict[str, dict[str, Any]]:
    """The publish task's ``timings``: stage -> its task's ``seconds`` and ``peak_rss_mb`` XComs.

    Args:
        **tasks: stage name -> its operator (or any object with an ``output``).
    """
    return {stage: {"seconds": task.output["seconds"], "peak_rss_mb": task.output["peak_rss_mb"]}
            for stage, task in tasks.items()}


def publish_kwargs(stages: Ingest) -> dict[str, Any]:
    """The PublishFactorsOperator arguments both DAGs share."""
    return {
        "warehouse": "{{ params.warehouse }}",
        "warehouse_conn_id": "{{ params.warehouse_conn_id }}",
        "schema": "{{ params.schema }}",
        "matrix_dir": stages.build.output["matrix_dir"],
        "source_table": "{{ params.source_table }}",
        "run_params": "{{ params }}",
        "keep": "{{ params.keep }}",
    }
