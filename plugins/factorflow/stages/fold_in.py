"""Fold-in: factors and top-N lists for users the current model has never seen.

A user who signed up after the last full run has ratings in the source table
but no row in the published model. :meth:`factorflow.engine.FactorModel.fold_in`
gives each such user the conditional mean of their row with every item held
fixed (the model's own loss and prior), and their top-N unseen items follow.
Nothing else of the model changes, so publishing only adds rows
(:func:`factorflow.stages.publish_fold_in.publish_folded`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from factorflow.engine.artifacts import reading, replacing, save_npz

FOLDED_FILE = "folded.npz"
NEW_USERS_FILE = "new_users.parquet"
FOLD_METRICS_FILE = "fold_in.json"


def _new_ratings(ratings_path: str | Path, known_users: Any, known_items: Any,
                 log_fn: Callable[[str], None]):
    """``(new user ids, Triplets over (new user k, known item index), dropped)`` of new users.

    Ratings of items the model does not know cannot place a new user (the item
    has no factors), so they are dropped and counted.
    """
    import polars as pl

    from factorflow.engine.triplets import Triplets

    with reading(ratings_path, task="extract"):
        frame = pl.read_parquet(ratings_path, columns=["user_id", "item_id", "rating"])
    frame = frame.filter(~pl.col("user_id").is_in(known_users.implode()))
    items = pl.DataFrame({"item_id": known_items,
                          "item": np.arange(len(known_items), dtype=np.int32)})
    joined = frame.join(items, on="item_id", how="left")
    dropped = int(joined["item"].null_count())
    joined = joined.drop_nulls("item")
    new_ids = joined["user_id"].unique().sort()
    users = pl.DataFrame({"user_id": new_ids, "user": np.arange(len(new_ids), dtype=np.int32)})
    joined = joined.join(users, on="user_id", how="left")
    if dropped:
        log_fn(f"fold-in: {dropped} rating(s) of new users name items the model does not know; "
               "they wait for the next full run")
    ratings = joined["rating"].to_numpy().astype(np.float32)
    bad = ~np.isfinite(ratings)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rating(s) of new users are null, NaN or infinite; "
                         "fix them in the source table")
    return new_ids, Triplets(joined["user"].to_numpy(), joined["item"].to_numpy(), ratings), dropped


def fold_in_new_users(previous_dir: str | Path, ratings_path: str | Path, out_dir: str | Path, *,
                      top_n: int = 10, rating_min: float | None = None,
                      rating_max: float | None = None,
                      log_fn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fold in the users of ``ratings_path`` absent from the model in ``previous_dir``.

    Args:
        previous_dir: the current model, as :func:`factorflow.stages.current_model.export_current_model`
            writes it (model, id maps).
        ratings_path: the extract stage's Parquet file (every rating; the known
            users' are ignored).
        out_dir: where ``folded.npz`` (``user_bias [k]``, ``user_factors [k, width]``,
            ``items``/``scores [k, top_n]``: top-N unseen, as item indices),
            ``new_users.parquet`` and ``fold_in.json`` go.
        top_n: length of each new user's list.
        rating_min, rating_max: the scale scores are clipped to (default: the
            new users' observed range).

    Returns:
        ``{"fold_dir": str | None, "n_users_folded", "n_ratings", "n_ratings_dropped",
        "train_rmse", "seconds"}``; ``fold_dir`` is None when there is nobody new.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from factorflow.engine import FactorModel
    from factorflow.stages.build import ITEMS_FILE, USERS_FILE, read_ids
    from factorflow.stages.train import MODEL_FILE

    log_fn, started = log_fn or print, time.perf_counter()
    previous_dir, out = Path(previous_dir), Path(out_dir)
    with reading(previous_dir / MODEL_FILE, task="previous_model"):
        model = FactorModel.load(previous_dir / MODEL_FILE)
    known_users = read_ids(previous_dir / USERS_FILE, "user_id")
    known_items = read_ids(previous_dir / ITEMS_FILE, "item_id")
    new_ids, new, dropped = _new_ratings(ratings_path, known_users, known_items, log_fn)
    summary = {"fold_dir": None, "n_users_folded": len(new_ids), "n_ratings": len(new),
               "n_ratings_dropped": dropped, "train_rmse": None}
    if not len(new_ids):
        log_fn("fold-in: nobody new: every user with ratings is in the model")
        return {**summary, "seconds": time.perf_counter() - started}
    shifted = new._replace(users=(new.users + model.n_users).astype(np.int32))
    folded = model.fold_in(shifted)
    rows = np.arange(model.n_users, model.n_users + len(new_ids), dtype=np.int32)
    lo = float(new.ratings.min() if rating_min is None else rating_min)
    hi = float(new.ratings.max() if rating_max is None else rating_max)
    items, scores = folded.recommend(rows, top_n, seen=shifted, clip=(lo, hi))
    residual = folded.predict(shifted.users, shifted.items) - new.ratings
    summary["train_rmse"] = float(np.sqrt(np.mean(residual.astype(np.float64) ** 2)))
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / FOLDED_FILE, user_bias=folded.params.user_bias[rows],
             user_factors=folded.params.user_factors[rows], items=items, scores=scores)
    with replacing(out / NEW_USERS_FILE) as tmp:
        pq.write_table(pa.table({"user_id": new_ids.to_arrow()}), tmp)
    summary.update(fold_dir=str(out), seconds=time.perf_counter() - started)
    with replacing(out / FOLD_METRICS_FILE) as tmp:  # last: the directory is complete
        tmp.write_text(json.dumps(summary))
    log_fn(f"fold-in: {len(new_ids)} new user(s) from {len(new)} ratings, their RMSE "
           f"{summary['train_rmse']:.4f}, in {summary['seconds']:.2f} s")
    return summary
