"""Publish: a trained model's tables, staged as Arrow, written into the warehouse atomically.

The publish stage reads the train and build artifacts once into these tables;
the warehouse's back end (DuckDB, PostgreSQL) then writes them in one
transaction: readers see the previous model or the new one, never a mix, and a
failure part-way leaves every table as it was. A model id is derived from the
DAG run, so a retry replaces its own rows and never touches other models'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from factorflow.engine.artifacts import disk_space
from factorflow.stages.staged import StagedModel, factor_table, item_statistics, prediction_table
from factorflow.warehouse import open_warehouse
from factorflow.warehouse.identifiers import quote_identifier

#: What to do when the warehouse's disk fills during a publish.
WAREHOUSE_TODO = ("the transaction rolled back, so the previous model is intact and current; free "
                  "space there or point the warehouse at a disk with room (retried after a delay)")
#: model_runs columns filled from the train stage's metrics (same names).
METRIC_COLUMNS = (
    "rank", "epochs_run", "best_epoch", "train_rmse", "train_mae", "valid_rmse",
    "valid_mae", "baseline_valid_rmse", "baseline_valid_mae", "fit_seconds",
    "ratings_per_second",
)


def stage_figures(timings: Mapping[str, Any]) -> dict[str, str]:
    """The ``timings`` and ``peak_rss_mb`` columns (JSON text, stage -> number) of a run.

    Args:
        timings: stage -> ``{"seconds": s, "peak_rss_mb": mb}`` as the DAGs pass
            it, or stage -> seconds (an earlier caller's form: no peaks).
    """
    seconds, peaks = {}, {}
    for stage, figures in timings.items():
        if isinstance(figures, Mapping):
            seconds[stage], peaks[stage] = figures.get("seconds"), figures.get("peak_rss_mb")
        else:
            seconds[stage] = figures
    return {"timings": json.dumps(seconds, sort_keys=True),
            "peak_rss_mb": json.dumps(peaks, sort_keys=True)}


def _run_row(model_id: str, info: Mapping[str, Any], counts: Mapping[str, Any],
             model_dir: Path, candidate_of: str | None = None,
             arrays: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, Any], dict]:
    """The ``model_runs`` row of one trained model, and its metrics (``arrays``: its
    ``model.npz``, when the caller has read it already)."""
    from factorflow.engine.artifacts import reading
    from factorflow.stages.train import METRICS_FILE, MODEL_FILE

    with reading(model_dir / METRICS_FILE, task="train"):
        metrics = json.loads((model_dir / METRICS_FILE).read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not the train stage's metrics")
    if arrays is None:
        arrays = _train_arrays(model_dir / MODEL_FILE, ("mean",))
    model_config = _model_config(arrays)
    config = metrics.get("config", {})
    params = dict(info.get("params", {}))
    if candidate_of is not None:  # a candidate's params: the run's, with its own settings
        params.update(config)
    return {
        "model_id": model_id,
        "dag_id": info.get("dag_id"),
        "dag_run_id": info.get("dag_run_id"),
        "source_table": info.get("source_table"),
        "params": json.dumps(params, sort_keys=True, default=str),
        "n_users": counts["n_users"],
        "n_items": counts["n_items"],
        "n_ratings": counts["n_ratings"],
        "n_train": counts["n_train"],
        "n_valid": counts["n_valid"],
        **{c: metrics.get(c) for c in METRIC_COLUMNS},
        "loss": str(config.get("loss", "squared")),
        "optimizer": config.get("optimizer"),
        **stage_figures(info.get("timings", {})),
        "history": json.dumps(metrics.get("history", [])),
        "global_mean": float(arrays["mean"]),
        "candidate_of": candidate_of,
        "warm_start_from": metrics.get("warm_start_from"),
        "parent_model_id": None,
        "model_config": model_config,
    }, metrics


#: Arrays of a model file that are its parameters or format, not its settings.
_MODEL_ARRAYS = ("format_version", "config_json", "mean", "user_bias", "item_bias",
                 "user_factors", "item_factors")


def _model_config(arrays: Mapping[str, np.ndarray]) -> str | None:
    """``model_runs.model_config``: the training settings and every small array the model
    file keeps beside its parameters (e.g. the fold-in prior), so that the published
    model can be loaded back as the same :class:`~factorflow.engine.FactorModel`."""
    if "config_json" not in arrays:
        return None
    extras = {k: v.tolist() for k, v in arrays.items() if k not in _MODEL_ARRAYS}
    return json.dumps({"config": json.loads(str(arrays["config_json"])), "arrays": extras})


def _train_arrays(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays of a train-stage ``.npz`` (no JAX needed), or an ``ArtifactError``
    naming the file and the ``train`` task."""
    from factorflow.engine.artifacts import load_npz, reading

    with reading(path, task="train"):
        return load_npz(path, required)


def _id_column(path: Path, column: str) -> Any:
    """The Arrow ``column`` of a build-stage id map, or an ``ArtifactError`` naming the file."""
    import pyarrow.parquet as pq

    from factorflow.engine.artifacts import reading

    with reading(path, task="build"):
        return pq.read_table(path, columns=[column])[column].combine_chunks()


def stage_model(model_id: str, model_dir: str | Path, matrix_dir: str | Path,
                run_info: Mapping[str, Any] | None = None,
                candidates: Sequence[str | Path] = ()) -> StagedModel:
    """Read the train and build artifacts into publishable tables.

    Args:
        model_id: the model's key.
        model_dir: output of the train stage (``model.npz``, ``metrics.json``,
            ``recommendations.npz``).
        matrix_dir: output of the build stage (id maps, counts, and the
            training ratings the item statistics are counted from).
        run_info: ``dag_id``, ``dag_run_id``, ``source_table``, ``params`` (dict)
            and ``timings`` (dict, see :func:`stage_figures`) to record in ``model_runs``.
        candidates: train-stage output directories of a sweep's candidates
            (the published one included), recorded as ``<model_id>/candidate-<k>``.

    Raises:
        ArtifactError: an artifact is truncated or garbage; the message names it
            and the task (``build`` or ``train``) to clear.
        ValueError: the factors hold NaN or infinity (never published), or the
            ids are neither integers nor strings.
    """
    from factorflow.stages.build import ITEMS_FILE, TRAIN_FILE, USERS_FILE, read_summary
    from factorflow.stages.train import MODEL_FILE, RECOMMENDATIONS_FILE

    model_dir, matrix_dir = Path(model_dir), Path(matrix_dir)
    info = dict(run_info or {})
    counts = read_summary(matrix_dir)
    m = _train_arrays(model_dir / MODEL_FILE, ("mean", "user_bias", "user_factors",
                                               "item_bias", "item_factors"))
    run, metrics = _run_row(model_id, info, counts, model_dir, arrays=m)
    candidate_runs = tuple(_run_row(f"{model_id}/candidate-{k}", info, counts, Path(d),
                                    candidate_of=model_id)[0] for k, d in enumerate(candidates))
    user_ids, item_ids = (_id_column(matrix_dir / file, column) for file, column in
                          ((USERS_FILE, "user_id"), (ITEMS_FILE, "item_id")))
    users = factor_table(user_ids, m["user_bias"], m["user_factors"])
    items = factor_table(item_ids, m["item_bias"], m["item_factors"])
    for name, column in zip(("n_ratings", "mean_rating"),
                            item_statistics(matrix_dir / TRAIN_FILE, items.num_rows)):
        items = items.append_column(name, column)
    rec = _train_arrays(model_dir / RECOMMENDATIONS_FILE, ("items", "scores"))
    predictions = prediction_table(user_ids, item_ids, rec["items"], rec["scores"])
    for name, table in (("user", users), ("item", items)):
        values = table["factors"].combine_chunks().flatten().to_numpy()
        if not (np.isfinite(values).all() and np.isfinite(table["bias"].to_numpy()).all()):
            raise ValueError(f"model {model_id} has non-finite {name} factors; refusing to publish")
    staged = StagedModel(model_id, users, items, predictions, run, metrics, candidate_runs)
    staged.id_kind("user"), staged.id_kind("item")  # refuse other id types up front
    return staged


def publish_model(
    warehouse: Any,
    *,
    model_id: str,
    model_dir: str | Path,
    matrix_dir: str | Path,
    schema: str = "factorflow",
    run_info: Mapping[str, Any] | None = None,
    keep: int = 5,
    lock_timeout: float = 60.0,
    candidates: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """Write one trained model's tables in a single transaction.

    Args:
        warehouse: a DuckDB database file (created if missing), or a PostgreSQL
            target (``postgresql://`` URI or
            :class:`factorflow.warehouse.postgres_targets.PostgresTarget`).
        model_id: the model's key; rows already stored under it are replaced.
        model_dir: output of the train stage (``model.npz``, ``metrics.json``,
            ``recommendations.npz``).
        matrix_dir: output of the build stage (id maps and counts).
        schema: target schema, validated against a strict identifier pattern.
        run_info: ``dag_id``, ``dag_run_id``, ``source_table``, ``params`` (dict)
            and ``timings`` (stage -> ``{"seconds", "peak_rss_mb"}``, or stage ->
            seconds) to record in ``model_runs``'s ``timings`` and ``peak_rss_mb``.
        keep: models kept (newest first); older ones are deleted in the same
            transaction. The ``current_*`` views then show this model.
        lock_timeout: seconds to wait for another writer's lock.
        candidates: a sweep's train-stage output directories (this model's
            included); each gets a ``model_runs`` row with ``candidate_of`` =
            ``model_id`` and no factors, in the same transaction.

    Returns:
        JSON-safe summary: warehouse, schema, model id and row counts per table.

    Raises:
        WarehouseLockedError: another writer held the lock past ``lock_timeout``.
        DiskFullError: the warehouse's disk filled; the previous model stays current.
    """
    if int(keep) < 1:
        raise ValueError(f"keep must be >= 1 (the new model is always kept), got {keep}")
    quote_identifier(schema)  # a bad schema fails before any artifact is read
    staged = stage_model(model_id, model_dir, matrix_dir, run_info, candidates)
    target = open_warehouse(warehouse)  # a DuckDB file's free space is measured here
    with disk_space(target.name, todo=WAREHOUSE_TODO, local=target.dialect == "duckdb"):
        return target.publish(staged, schema=schema, keep=int(keep), lock_timeout=lock_timeout)
