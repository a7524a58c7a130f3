"""Thin Airflow operators over the factorflow library.

Each operator only stores its arguments in ``__init__`` (it runs at DAG-parse
time), and in ``execute`` calls one library function, importing it there so
that parsing never loads JAX, Polars or Great Expectations. XCom carries the
library's small JSON-safe summary (paths, counts, metrics); arrays travel as
files in a run-scoped artifact directory.

Whoever triggers a run chooses its conf, so before any work each task checks
the files and loss the conf names against what the deployment allows
(:mod:`factorflow.airflow.confinement`); a refusal fails the task at once,
without retries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


def run_dir(artifacts_dir: str, context: "Context") -> Path:
    """``<artifacts_dir>/<dag_id>/<run_id>``, the run id made filesystem-safe."""
    run_id = re.sub(r"[^A-Za-z0-9_.-]+", "_", context["run_id"])
    return Path(artifacts_dir) / context["dag"].dag_id / run_id


def model_id_for(context: "Context") -> str:
    """The published model's key: one per DAG run, so retries replace, never add."""
    return f"{context['dag'].dag_id}/{context['run_id']}"


def fail_fast(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``; a failure retrying cannot fix (a refused conf, a misconfigured
    connection or setting: a ValueError) fails the task now, without retries."""
    from factorflow.airflow.failures import no_retry

    try:
        return fn(*args)
    except Exception as exc:
        if (failure := no_retry(exc)) is None:
            raise
        raise failure from exc


def _warehouse_target(warehouse: str, conn_id: str | None) -> Any:
    """:func:`~factorflow.airflow.connections.warehouse_target`, a conf's DuckDB path checked."""
    from factorflow.airflow.confinement import check_path
    from factorflow.airflow.connections import warehouse_target

    if not conn_id:  # a connection's DuckDB file is the admin's choice, not the conf's
        check_path("warehouse", warehouse)
    return warehouse_target(warehouse, conn_id)


def resolve_warehouse(warehouse: str, conn_id: str | None) -> Any:
    """The library's warehouse target, once the conf's DuckDB path is checked.

    Fails without retries when the path lies outside ``FACTORFLOW_DATA_ROOTS``
    or the connection is misconfigured.
    """
    return fail_fast(_warehouse_target, warehouse, conn_id)


class _StageOperator(BaseOperator):
    """Shared execute: measure the stage function, push its summary, and decide
    whether a failure is worth a retry.

    The summary is the task's return value, and each of its fields is also
    pushed under its own key (as TaskFlow's ``multiple_outputs`` does), so the
    DAG can wire ``extract.output["path"]`` straight into the next operator.
    It gains the stage's wall time (``seconds``) and peak resident memory
    (``peak_rss_mb``, :class:`factorflow.stages.resources.ResourceMeter`).

    A failure the same inputs would repeat (out of memory, a ValueError such as
    bad data, a refused setting or a diverging loss) fails the task without
    retries, saying what to change; lock timeouts, lost connections and anything
    unrecognised keep the task's retries (:mod:`factorflow.airflow.failures`).
    """

    stage: str = ""

    def _run(self, context: "Context", fn: Callable[..., dict[str, Any]], *args: Any,
             **kwargs: Any) -> dict[str, Any]:
        from factorflow.airflow.failures import no_retry
        from factorflow.stages.resources import ResourceMeter

        meter = ResourceMeter()
        try:
            with meter:
                summary = dict(fn(*args, **kwargs))
        except Exception as exc:
            failure = no_retry(exc, stage=self.stage, meter=meter, rank=kwargs.get("rank"))
            self.log.error("%s failed after %.2f s, %s; %s", self.stage, meter.seconds,
                           meter.describe(),
                           f"{type(exc).__name__} may not recur: the task's retries apply"
                           if failure is None else
                           "not retried: the same inputs would fail the same way")
            if failure is None:
                raise
            raise failure from exc
        summary["seconds"] = round(meter.seconds, 3)
        summary["peak_rss_mb"] = meter.peak_rss_mb
        self.log.info("%s done in %.2f s, %s: %s", self.stage, meter.seconds, meter.describe(),
                      summary)
        for key, value in summary.items():
            context["ti"].xcom_push(key=key, value=value)
        return summary


class ExtractRatingsOperator(_StageOperator):
    """Copy the source ratings table to a Parquet artifact.

    Args:
        warehouse: DuckDB file holding the source table, when no connection is
            given; must lie under ``FACTORFLOW_DATA_ROOTS`` (templated).
        source_table: ``schema.table`` to read, or a Parquet/CSV path or glob
            under ``FACTORFLOW_DATA_ROOTS`` (templated).
        artifacts_dir: root of the run-scoped artifact directories (templated).
        warehouse_conn_id: Airflow connection (postgres or duckdb) of the
            warehouse; empty uses ``warehouse`` (templated).
    """

    template_fields: Sequence[str] = ("warehouse", "source_table", "artifacts_dir",
                                      "warehouse_conn_id")
    stage = "extract"

    def __init__(self, *, warehouse: str, source_table: str, artifacts_dir: str,
                 warehouse_conn_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse
        self.source_table = source_table
        self.artifacts_dir = artifacts_dir
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: "Context") -> dict[str, Any]:
        from factorflow.airflow.confinement import check_source
        from factorflow.stages.extract import extract_ratings

        # a file source is read directly, whatever the connection: check it first
        fail_fast(check_source, "source_table", self.source_table)
        target = resolve_warehouse(self.warehouse, self.warehouse_conn_id)
        out = run_dir(self.artifacts_dir, context) / "extract"
        return self._run(context, extract_ratings, target, self.source_table, out)


class ValidateRatingsOperator(_StageOperator):
    """Run the Great Expectations ratings suite; fail with its report.

    Args:
        ratings_path: Parquet artifact of the extract stage (templated).
        rating_min: lowest valid rating (templated).
        rating_max: highest valid rating (templated).
        min_rows: fewest rows accepted (templated).
    """

    template_fields: Sequence[str] = ("ratings_path", "rating_min", "rating_max", "min_rows")
    stage = "validate"

    def __init__(self, *, ratings_path: Any, rating_min: Any, rating_max: Any,
                 min_rows: Any = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.ratings_path = ratings_path
        self.rating_min = rating_min
        self.rating_max = rating_max
        self.min_rows = min_rows

    def execute(self, context: "Context") -> dict[str, Any]:
        from factorflow.stages.validate import validate_ratings

        # A RatingsValidationError (bad data) fails the task once with its report:
        # _run treats every ValueError as deterministic, so it is not retried.
        return self._run(context, validate_ratings, self.ratings_path,
                         rating_min=float(self.rating_min), rating_max=float(self.rating_max),
                         min_rows=int(self.min_rows), log=self.log.info)


class BuildMatricesOperator(_StageOperator):
    """Map ids, split train/validation, write COO triplets.

    Args:
        ratings_path: Parquet artifact of the extract stage (templated).
        artifacts_dir: root of the run-scoped artifact directories (templated).
        valid_fraction: share of each user's ratings held out (templated).
        seed: seed of the split (templated).
    """

    template_fields: Sequence[str] = ("ratings_path", "artifacts_dir", "valid_fraction", "seed")
    stage = "build"

    def __init__(self, *, ratings_path: Any, artifacts_dir: str, valid_fraction: Any = 0.1,
                 seed: Any = 0, **kwargs: Any):
        super().__init__(**kwargs)
        self.ratings_path = ratings_path
        self.artifacts_dir = artifacts_dir
        self.valid_fraction = valid_fraction
        self.seed = seed

    def execute(self, context: "Context") -> dict[str, Any]:
        from factorflow.stages.build import build_matrices

        out = run_dir(self.artifacts_dir, context) / "matrix"
        return self._run(context, build_matrices, self.ratings_path, out,
                         valid_fraction=float(self.valid_fraction), seed=int(self.seed),
                         log=self.log.info)


class TrainFactorsOperator(_StageOperator):
    """Train a biased rank-k factor model with JAX autodiff.

    Meant for a GPU worker: give it ``queue="gpu"`` (the DAG does). The same
    code runs on CPU when JAX finds no accelerator.

    Args:
        matrix_dir: output of the build stage (templated).
        artifacts_dir: root of the run-scoped artifact directories (templated).
        train_config: TrainConfig fields, e.g. rank, epochs, learning_rate, reg,
            seed; ``None`` values take the engine's defaults; a custom ``loss``
            must come from ``FACTORFLOW_LOSS_MODULES`` (templated).
        top_n: length of each user's published recommendation list (templated).
        rating_min: lowest rating of the scale the published scores are clipped
            to; empty or None: the lowest training rating (templated).
        rating_max: highest rating of that scale; empty or None: the highest
            training rating (templated).
    """

    template_fields: Sequence[str] = ("matrix_dir", "artifacts_dir", "train_config", "top_n",
                                      "rating_min", "rating_max")
    stage = "train"

    def __init__(self, *, matrix_dir: Any, artifacts_dir: str, train_config: dict[str, Any],
                 top_n: Any = 10, rating_min: Any = None, rating_max: Any = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.matrix_dir = matrix_dir
        self.artifacts_dir = artifacts_dir
        self.train_config = train_config
        self.top_n = top_n
        self.rating_min = rating_min
        self.rating_max = rating_max

    @staticmethod
    def _bound(value: Any) -> float | None:
        """A rendered scale bound as a float; None for an unset param."""
        return None if value is None or str(value).strip() in ("", "None") else float(value)

    def execute(self, context: "Context") -> dict[str, Any]:
        from factorflow.airflow.confinement import check_loss
        from factorflow.stages.train import train_factors

        fail_fast(check_loss, "loss", self.train_config.get("loss"))  # before importing it
        map_index = getattr(context["ti"], "map_index", -1)
        name = "model" if map_index is None or map_index < 0 else f"model-{map_index}"
        out = run_dir(self.artifacts_dir, context) / name  # one directory per sweep candidate
        return self._run(context, train_factors, self.matrix_dir, out, top_n=int(self.top_n),
                         rating_min=self._bound(self.rating_min),
                         rating_max=self._bound(self.rating_max),
                         log_fn=self.log.info, **self.train_config)


class PublishFactorsOperator(_StageOperator):
    """Write the model's tables to the warehouse in one transaction.

    Args:
        warehouse: DuckDB file to publish into, when no connection is given; must
            lie under ``FACTORFLOW_DATA_ROOTS`` (templated).
        schema: target schema (templated).
        model_dir: output of the train stage (templated).
        matrix_dir: output of the build stage (templated).
        source_table: recorded in ``model_runs`` (templated).
        run_params: the run's parameters, recorded as JSON (templated).
        timings: stage name -> ``{"seconds", "peak_rss_mb"}`` (or seconds), recorded in
            ``model_runs`` (templated).
        keep: models kept after this one is published (templated).
        warehouse_conn_id: Airflow connection (postgres or duckdb) to publish
            into; empty uses ``warehouse`` (templated).
        candidates: a sweep's train output directories, recorded in
            ``model_runs`` with ``candidate_of`` = this model (templated).
    """

    template_fields: Sequence[str] = ("warehouse", "schema", "model_dir", "matrix_dir",
                                      "source_table", "run_params", "timings", "keep",
                                      "warehouse_conn_id", "candidates")
    stage = "publish"

    def __init__(self, *, warehouse: str, schema: str, model_dir: Any, matrix_dir: Any,
                 source_table: str, run_params: Any = None, timings: Any = None,
                 keep: Any = 5, warehouse_conn_id: str | None = None, candidates: Any = (),
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse
        self.warehouse_conn_id = warehouse_conn_id
        self.schema = schema
        self.model_dir = model_dir
        self.matrix_dir = matrix_dir
        self.source_table = source_table
        self.run_params = run_params
        self.timings = timings
        self.keep = keep
        self.candidates = candidates

    def execute(self, context: "Context") -> dict[str, Any]:
        from factorflow.stages.publish import publish_model

        target = resolve_warehouse(self.warehouse, self.warehouse_conn_id)
        info = {"dag_id": context["dag"].dag_id, "dag_run_id": context["run_id"],
                "source_table": self.source_table, "params": dict(self.run_params or {}),
                "timings": dict(self.timings or {})}
        summary = self._run(context, publish_model, target, model_id=model_id_for(context),
                            model_dir=self.model_dir, matrix_dir=self.matrix_dir,
                            schema=self.schema, run_info=info, keep=int(self.keep),
                            candidates=list(self.candidates or ()))
        announce(self, context, summary["model_id"])
        return summary


def announce(task: Any, context: "Context", model_id: str) -> None:
    """Tell consumers scheduled on ``task``'s outlet assets where the new model is."""
    for asset in task.outlets:
        context["outlet_events"][asset].extra = {
            "warehouse": str(task.warehouse), "warehouse_conn_id": task.warehouse_conn_id or "",
            "schema": task.schema, "model_id": model_id}
