"""Publish a fold-in: a derived model version that extends the current model by new users.

The derived model gets its own id and ``model_runs`` row, with
``parent_model_id`` naming the model it extends; in the same transaction as
its new rows, every row of the parent is copied under the new id, so it is a
complete model like any other: the ``current_*`` views show it, retention and
rollback treat it alike, and a rollback to the parent drops the folded rows
from ``current_*``. If another model became current meanwhile, nothing is
written (:class:`factorflow.warehouse.base.ParentNotCurrentError`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from factorflow.engine.artifacts import disk_space, load_npz, reading
from factorflow.stages.publish import WAREHOUSE_TODO, stage_figures
from factorflow.stages.staged import StagedModel, factor_table, prediction_table


def _empty_items(item_ids: Any) -> Any:
    """An item table with no rows, typed like the parent's ids (a fold-in adds no items)."""
    import pyarrow as pa

    return pa.table({"id": pa.array([], item_ids.type), "bias": pa.array([], pa.float32()),
                     "factors": pa.array([], pa.list_(pa.float32())),
                     "n_ratings": pa.array([], pa.int64()), "mean_rating": pa.array([], pa.float64())})


def _run_row(model_id: str, parent: Mapping[str, Any], fold: Mapping[str, Any],
             info: Mapping[str, Any]) -> dict[str, Any]:
    """The derived model's ``model_runs`` row: the parent's model (its global mean and
    settings, as published), the fold-in's counts."""
    return {
        "model_id": model_id, "dag_id": info.get("dag_id"), "dag_run_id": info.get("dag_run_id"),
        "source_table": info.get("source_table"),
        "params": json.dumps(dict(info.get("params", {})), sort_keys=True, default=str),
        "n_users": int(parent["n_users"]) + int(fold["n_users_folded"]),
        "n_items": parent["n_items"], "n_ratings": fold["n_ratings"], "n_train": fold["n_ratings"],
        "n_valid": 0, "rank": parent["rank"], "loss": parent["loss"],
        "optimizer": parent["optimizer"], "epochs_run": None, "best_epoch": None,
        "train_rmse": fold["train_rmse"], "train_mae": None, "valid_rmse": None,
        "valid_mae": None, "baseline_valid_rmse": None, "baseline_valid_mae": None,
        "fit_seconds": fold.get("seconds"), "ratings_per_second": None,
        **stage_figures(info.get("timings", {})), "history": "[]",
        "global_mean": parent["global_mean"], "candidate_of": None, "warm_start_from": None,
        "parent_model_id": parent["model_id"], "model_config": parent.get("model_config"),
    }


def stage_folded_model(model_id: str, fold_dir: str | Path, previous_dir: str | Path,
                       run_info: Mapping[str, Any] | None = None) -> StagedModel:
    """The new users' rows and lists as a :class:`StagedModel` whose ``parent`` is the model.

    Args:
        model_id: the derived model's key.
        fold_dir: output of :func:`factorflow.stages.fold_in.fold_in_new_users`.
        previous_dir: the parent, as :func:`factorflow.stages.current_model.export_current_model` wrote it.
        run_info: ``dag_id``, ``dag_run_id``, ``source_table``, ``params``, ``timings``.
    """
    import pyarrow.parquet as pq

    from factorflow.stages.build import ITEMS_FILE
    from factorflow.stages.fold_in import FOLD_METRICS_FILE, FOLDED_FILE, NEW_USERS_FILE
    from factorflow.stages.train import read_model_info

    fold_dir, previous_dir = Path(fold_dir), Path(previous_dir)
    parent = read_model_info(previous_dir)
    with reading(fold_dir / FOLD_METRICS_FILE, task="fold_in"):
        fold = json.loads((fold_dir / FOLD_METRICS_FILE).read_text())
    with reading(fold_dir / NEW_USERS_FILE, task="fold_in"):
        user_ids = pq.read_table(fold_dir / NEW_USERS_FILE)["user_id"].combine_chunks()
    with reading(previous_dir / ITEMS_FILE, task="previous_model"):
        item_ids = pq.read_table(previous_dir / ITEMS_FILE)["item_id"].combine_chunks()
    with reading(fold_dir / FOLDED_FILE, task="fold_in"):
        arrays = load_npz(fold_dir / FOLDED_FILE, ("user_bias", "user_factors", "items", "scores"))
    if not (np.isfinite(arrays["user_factors"]).all() and np.isfinite(arrays["user_bias"]).all()):
        raise ValueError(f"model {model_id} has non-finite folded factors; refusing to publish")
    run = _run_row(model_id, parent, fold, dict(run_info or {}))
    staged = StagedModel(
        model_id, factor_table(user_ids, arrays["user_bias"], arrays["user_factors"]),
        _empty_items(item_ids), prediction_table(user_ids, item_ids, arrays["items"],
                                                 arrays["scores"]),
        run, {"train_rmse": fold["train_rmse"]}, parent=parent["model_id"])
    staged.id_kind("user"), staged.id_kind("item")
    return staged


def publish_folded(warehouse: Any, *, model_id: str, fold_dir: str | Path,
                   previous_dir: str | Path, schema: str = "factorflow",
                   run_info: Mapping[str, Any] | None = None, keep: int = 5,
                   lock_timeout: float = 60.0) -> dict[str, Any]:
    """Publish the fold-in in ``fold_dir`` as a derived model, atomically (as a full run).

    Raises:
        ParentNotCurrentError: another model became current since the fold-in
            read it; nothing was written.
        WarehouseLockedError: another writer held the lock past ``lock_timeout``.
    """
    from factorflow.warehouse import open_warehouse

    staged = stage_folded_model(model_id, fold_dir, previous_dir, run_info)
    target = open_warehouse(warehouse)
    with disk_space(target.name, todo=WAREHOUSE_TODO, local=target.dialect == "duckdb"):
        summary = target.publish(staged, schema=schema, keep=int(keep), lock_timeout=lock_timeout)
    return {**summary, "parent_model_id": staged.parent}
