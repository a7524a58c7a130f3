"""The current published model, read back from the warehouse into a model directory.

A warm start (``factorize_ratings``) and a fold-in (``fold_in_new_users``) both
start from the model the ``current_*`` views show. This stage writes it in the
layout the train and build stages use, so the rest reads it like any model:
``model.npz`` (:meth:`factorflow.engine.FactorModel.save`), ``users.parquet``
and ``items.parquet`` (id maps: ``user_index``/``user_id``, as the build
writes), and ``model.json`` (its ``model_runs`` row: id, rank, loss, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from factorflow.engine.artifacts import replacing
from factorflow.stages.build import ITEMS_FILE, USERS_FILE, write_ids
from factorflow.stages.train import MODEL_FILE, MODEL_INFO_FILE


def _rows(target: Any, name: str, schema: str, model_id: str, id_column: str):
    """``(ids [n] as an Arrow array, bias [n] float32, factors [n, k] float32)`` of one side."""
    import pyarrow as pa

    _, rows = target.run_query("current_model.sql", name, schema=schema,
                               params={"model_id": model_id})
    if not rows:
        raise LookupError(f"model {model_id} has no {id_column.split('_')[0]} rows")
    ids, bias, factors = zip(*rows)
    return (pa.array(ids), np.asarray(bias, np.float32),
            np.asarray([np.asarray(f, np.float32) for f in factors], np.float32))


def _settings(run: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(training settings, the model file's other arrays)`` of a published model.

    From ``model_runs.model_config`` where it was published; a model published by
    an earlier factorflow has only its run row (rank, loss, optimizer, params),
    and no fold-in prior (a fold-in then estimates one: see
    :mod:`factorflow.engine.fold_in_priors`).
    """
    stored = json.loads(run["model_config"]) if run.get("model_config") else None
    if isinstance(stored, dict) and isinstance(stored.get("config"), dict):
        return stored["config"], {k: np.asarray(v) for k, v in stored.get("arrays", {}).items()}
    params = json.loads(run["params"]) if run.get("params") else {}
    config = {k: params[k] for k in ("rank", "loss", "optimizer", "reg", "seed") if k in params}
    return {**config, "rank": run["rank"], "loss": run["loss"] or "squared",
            "optimizer": run["optimizer"] or config.get("optimizer")}, {}


def export_current_model(warehouse: Any, out_dir: str | Path, *, schema: str = "factorflow",
                         model_id: str | None = None,
                         log_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the current model of ``schema`` (or kept model ``model_id``) to ``out_dir``.

    Args:
        warehouse: a DuckDB file or a PostgreSQL target.
        out_dir: the directory to write (created).
        schema: the published schema.
        model_id: a kept model (``model_runs.model_id``, not a sweep candidate);
            None: the current one.
        log_fn: where the one line saying what was read goes.

    Returns:
        ``{"model_dir": str | None, "model_id": str | None, "n_users", "n_items",
        "reason": str | None}``; ``model_dir`` is None (with the ``reason``)
        when nothing is published there yet.
    """
    import polars as pl

    from factorflow.engine import FactorModel
    from factorflow.engine.factors import FactorParams
    from factorflow.engine.fold_in_priors import spec_from_arrays
    from factorflow.warehouse import open_warehouse

    target = open_warehouse(warehouse)
    try:
        columns, runs = target.run_query("current_model.sql", "model_run", schema=schema,
                                         params={"model_id": model_id})
    except LookupError as exc:
        runs, reason = [], str(exc)
    else:
        reason = (f"no current model in {target.name} schema {schema}" if model_id is None else
                  f"no kept model {model_id!r} in {target.name} schema {schema}")
    if not runs:
        (log_fn or print)(f"no model to start from: {reason}")
        return {"model_dir": None, "model_id": None, "n_users": 0, "n_items": 0,
                "reason": reason}
    run = dict(zip(columns, runs[0]))
    user_ids, user_bias, user_factors = _rows(target, "user_rows", schema, run["model_id"], "user_id")
    item_ids, item_bias, item_factors = _rows(target, "item_rows", schema, run["model_id"], "item_id")
    config, arrays = _settings(run)
    model = FactorModel(FactorParams(np.float32(run["global_mean"]), user_bias, item_bias,
                                     user_factors, item_factors), config=config,
                        fold_in_spec=spec_from_arrays(arrays))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    write_ids(pl.Series("user_id", user_ids), "user_index", out / USERS_FILE)
    write_ids(pl.Series("item_id", item_ids), "item_index", out / ITEMS_FILE)
    # what a fold-in's publish records of its parent, without loading the model again
    info = {k: run[k] for k in ("model_id", "rank", "loss", "optimizer", "n_users", "n_items",
                                "global_mean", "model_config")}
    with replacing(out / MODEL_INFO_FILE) as tmp:  # last: the directory is complete
        tmp.write_text(json.dumps(info, default=str))
    (log_fn or print)(f"read model {run['model_id']} ({model.n_users} users, {model.n_items} "
                      f"items, width {model.rank}) from {target.name} schema {schema}")
    return {"model_dir": str(out), "model_id": run["model_id"], "n_users": model.n_users,
            "n_items": model.n_items, "reason": None}


def count_new_users(warehouse: Any, source_table: str, *,
                    schema: str = "factorflow") -> tuple[str | None, int]:
    """``(current model id, users of source_table it lacks)``; ``(None, 0)`` with no model.

    One query, without reading the model: the quick check before a fold-in.

    Raises:
        ValueError: ``source_table`` is not a table name (a file path): the
            check joins it with the model's rows, so it must live in the same
            warehouse.
    """
    from factorflow.warehouse import open_warehouse
    from factorflow.warehouse.identifiers import quote_table

    try:
        source = quote_table(source_table)
    except ValueError as exc:
        raise ValueError(f"fold-in needs source_table to be a table of the warehouse the model "
                         f"is published to, got {source_table!r}: {exc}") from exc
    target = open_warehouse(warehouse)
    try:
        _, rows = target.run_query("current_model.sql", "new_users", schema=schema,
                                   fields={"source": source})
    except LookupError:
        return None, 0
    return (rows[0][0], int(rows[0][1])) if rows else (None, 0)
