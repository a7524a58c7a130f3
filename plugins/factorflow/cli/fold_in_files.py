"""``factorflow fold-in``: a model directory and new ratings in, the model extended by new rows out.

The directory is one ``factorflow fit --out DIR`` wrote (``model.npz`` and the
two id maps). The ratings' ids go through the id maps; an id the map lacks is a
new row, appended after the known ones (new ids in sorted order) and folded in
from its ratings of known rows (:meth:`factorflow.engine.FactorModel.fold_in`):
ratings between a new user and a new item are ignored, and the known rows stay
as they are. With ``--out`` the extended model is written in the same layout,
so it can be folded into again or served. The subcommand itself is
registered by :mod:`factorflow.cli.fold_in_command`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from factorflow.cli.fit_files import (ITEMS_FILE, METRICS_FILE, MODEL_FILE, UNKNOWN, USERS_FILE,
                                      json_safe, predict_open)
from factorflow.cli.readers import read_ratings
from factorflow.engine import FactorModel, Triplets
from factorflow.engine.fold_in import count_folded
from factorflow.engine.metrics import mae, rmse
from factorflow.engine.runtime.cache import enable_compilation_cache, start_runtime


def read_model_dir(model_dir: str | Path) -> tuple[FactorModel, pl.DataFrame, pl.DataFrame]:
    """``(model, users, items)`` of a ``factorflow fit --out`` directory.

    Raises:
        FileNotFoundError: the directory or one of its three files is missing.
    """
    model_dir = Path(model_dir)
    for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: no such file; --model takes a "
                                    "directory written by `factorflow fit --out DIR`")
    return (FactorModel.load(model_dir / MODEL_FILE), pl.read_parquet(model_dir / USERS_FILE),
            pl.read_parquet(model_dir / ITEMS_FILE))


def extend_id_map(id_map: pl.DataFrame, ids: pl.Series, name: str) -> pl.DataFrame:
    """``id_map`` (``<name>_index``, ``<name>_id``) with the ids it lacks appended, sorted.

    Where ``ids`` and the map hold different types (integer ids in the map,
    text among the new ones) both are compared, and the map kept, as text.
    """
    key = f"{name}_id"
    known = id_map[key]
    if known.dtype != ids.dtype:
        id_map = id_map.with_columns(pl.col(key).cast(pl.String))
        known, ids = id_map[key], ids.cast(pl.String)
    distinct = ids.unique()
    new = distinct.filter(~distinct.is_in(known.implode())).sort()
    added = pl.DataFrame({f"{name}_index": pl.int_range(id_map.height, id_map.height + new.len(),
                                                       dtype=pl.Int32, eager=True), key: new})
    return pl.concat([id_map, added.select(id_map.columns)])


def to_index(ids: pl.Series, id_map: pl.DataFrame, name: str) -> np.ndarray:
    """``[n]`` int32 indices of ``ids`` in ``id_map``; :data:`UNKNOWN` where absent."""
    known = id_map[f"{name}_id"]
    ids = ids.cast(known.dtype, strict=False)
    return ids.replace_strict(known, id_map[f"{name}_index"], default=UNKNOWN,
                              return_dtype=pl.Int32).fill_null(UNKNOWN).to_numpy()


def fold_in_files(model_dir: str | Path, ratings_path: str | Path, *,
                  test_path: str | Path | None = None, format: str = "auto",
                  out: str | Path | None = None,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fold the new users and items of a ratings file into a saved model.

    Args:
        model_dir: a directory written by ``factorflow fit --out``.
        ratings_path: ratings naming new users and items (any format
            :func:`read_ratings` reads); ratings between known rows are ignored.
        test_path: optional test ratings, scored by the extended model (ids it
            still lacks are scored from the mean and the known biases).
        format: format of both files, or ``"auto"``.
        out: directory for the extended model, id maps and ``metrics.json``.
        log: called with human-readable progress lines.

    Returns:
        A JSON-safe dict: ``rmse``/``mae`` on the test file (None without one),
        ``n_users_folded``, ``n_items_folded`` (new rows with usable ratings),
        ``n_ratings``, ``n_ignored``, ``n_users``, ``n_items`` (after),
        ``fold_in_seconds`` (the engine's, compiling included) and ``seconds`` (all of it).
    """
    enable_compilation_cache()
    runtime = start_runtime()
    started, log = time.perf_counter(), log or (lambda line: None)
    model, users, items = read_model_dir(model_dir)
    frame = read_ratings(ratings_path, format=format)
    users = extend_id_map(users, frame["user_id"], "user")
    items = extend_id_map(items, frame["item_id"], "item")
    ratings = Triplets(to_index(frame["user_id"], users, "user"),
                       to_index(frame["item_id"], items, "item"),
                       frame["rating"].to_numpy().astype(np.float32))
    n_users, n_items, n_ignored = count_folded(ratings, model.n_users, model.n_items)
    log(f"read {len(ratings):,} ratings: {users.height - model.n_users:,} new users, "
        f"{items.height - model.n_items:,} new items")
    runtime.result()
    t0 = time.perf_counter()
    extended = model.fold_in(ratings)  # every new id has a rating: the maps' sizes
    fold_seconds = time.perf_counter() - t0
    summary = {"model_dir": str(model_dir), "ratings_path": str(ratings_path),
               "test_path": None if test_path is None else str(test_path),
               "n_ratings": len(ratings), "n_ignored": n_ignored,
               "n_users_folded": n_users, "n_items_folded": n_items,
               "n_users": extended.n_users, "n_items": extended.n_items,
               "rmse": None, "mae": None, "fold_in_seconds": fold_seconds,
               **({} if test_path is None else _test_metrics(extended, users, items, test_path,
                                                             format)),
               "out": None if out is None else str(out)}
    summary["seconds"] = time.perf_counter() - started
    summary = json_safe(summary)
    if out is not None:
        _save(Path(out), extended, users, items, summary)
    return summary


def _test_metrics(model: FactorModel, users: pl.DataFrame, items: pl.DataFrame,
                  test_path: str | Path, format: str) -> dict[str, Any]:
    test = read_ratings(test_path, format=format)
    u, i = to_index(test["user_id"], users, "user"), to_index(test["item_id"], items, "item")
    r = test["rating"].to_numpy().astype(np.float32)
    pred = predict_open(model.params, u, i)
    return {"rmse": rmse(pred, r), "mae": mae(pred, r), "n_test": int(r.shape[0]),
            "n_test_unknown_user": int(np.sum(u == UNKNOWN)),
            "n_test_unknown_item": int(np.sum(i == UNKNOWN))}


def _save(out: Path, model: FactorModel, users: pl.DataFrame, items: pl.DataFrame,
          summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    users.write_parquet(out / USERS_FILE)
    items.write_parquet(out / ITEMS_FILE)
    (out / METRICS_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False))
