"""A model ready to publish: :class:`StagedModel` and the Arrow tables it holds.

Built by :func:`factorflow.stages.publish.stage_model` (a trained model) and
:func:`factorflow.stages.publish_fold_in.stage_folded_model` (a fold-in), and
written by the warehouse's back end in one transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np


class StagedModel(NamedTuple):
    """One model, ready to publish.

    Attributes:
        model_id: the key its rows are stored under.
        users: Arrow table ``(id, bias FLOAT, factors LIST<FLOAT>)``, one row per user.
        items: the same for items, plus ``n_ratings`` (INT64) and ``mean_rating``
            (DOUBLE, null without ratings) over the training ratings the model
            was fit on: what the cold-start lists rank by.
        predictions: Arrow table ``(user_id, item_id, score, rank)``, top-N per user.
        run: the ``model_runs`` row (JSON columns as JSON text).
        metrics: the train stage's metrics (valid_rmse, baseline_valid_rmse, ...).
        candidates: ``model_runs`` rows of a sweep's candidates (no factors),
            each with ``candidate_of`` = ``model_id``.
        parent: a fold-in's model (the current one) whose other rows this one
            gets, copied in the warehouse; None for a trained model.
    """

    model_id: str
    users: Any
    items: Any
    predictions: Any
    run: dict[str, Any]
    metrics: dict[str, Any]
    candidates: tuple[dict[str, Any], ...] = ()
    parent: str | None = None

    def id_kind(self, which: str) -> str:
        """``"integer"`` or ``"string"``: the kind of the user or item ids."""
        import pyarrow as pa

        arrow_type = (self.users if which == "user" else self.items).schema.field("id").type
        if pa.types.is_integer(arrow_type):
            return "integer"
        if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
            return "string"
        raise ValueError(f"unsupported {which} id type {arrow_type}: ids must be integers or strings")

    @property
    def width(self) -> int:
        """Factor columns per user/item (``rank``; ``rank x samples`` for Gibbs)."""
        return len(self.users["factors"][0]) if self.users.num_rows else 0

    def summary(self) -> dict[str, Any]:
        """JSON-safe row counts and headline metrics."""
        return {"model_id": self.model_id, "user_factors": self.users.num_rows,
                "item_factors": self.items.num_rows, "predictions": self.predictions.num_rows,
                "valid_rmse": self.metrics.get("valid_rmse"),
                "baseline_valid_rmse": self.metrics.get("baseline_valid_rmse")}


def factor_table(ids: Any, bias: np.ndarray, factors: np.ndarray) -> Any:
    """Arrow table ``(id, bias, factors LIST<FLOAT>)`` without copying the factors."""
    import pyarrow as pa

    n, rank = factors.shape
    flat = pa.array(np.ascontiguousarray(factors, np.float32).reshape(-1))
    offsets = pa.array(np.arange(0, (n + 1) * rank, rank, dtype=np.int32))
    return pa.table({
        "id": ids,
        "bias": pa.array(np.asarray(bias, np.float32)),
        "factors": pa.ListArray.from_arrays(offsets, flat),
    })


def item_statistics(train_path: Path, n_items: int) -> tuple[Any, Any]:
    """Arrow ``(n_ratings [n_items] int64, mean_rating [n_items] float64)`` of the train split.

    Counted at publish time from the build stage's ``train.npz`` (the ratings
    the model was fit on), so a kept model's popularity lists need nothing but
    its own rows. An item without training ratings has count 0 and a null mean.
    """
    import pyarrow as pa

    from factorflow.engine.triplets import Triplets
    from factorflow.engine.artifacts import reading

    with reading(train_path, task="build"):
        train = Triplets.load(train_path)
    counts = np.bincount(train.items, minlength=n_items)
    sums = np.bincount(train.items, weights=train.ratings.astype(np.float64), minlength=n_items)
    means = np.divide(sums, counts, out=np.zeros(n_items), where=counts > 0)
    return (pa.array(counts.astype(np.int64)),
            pa.array(means, mask=counts == 0))


def prediction_table(user_ids: Any, item_ids: Any, top_items: np.ndarray,
                      top_scores: np.ndarray) -> Any:
    """Long Arrow table of the top-N lists; padding slots (item -1) are dropped."""
    import pyarrow as pa

    n_users, n = top_items.shape
    keep = top_items.reshape(-1) >= 0
    users = np.repeat(np.arange(n_users), n)[keep]
    return pa.table({
        "user_id": user_ids.take(pa.array(users)),
        "item_id": item_ids.take(pa.array(top_items.reshape(-1)[keep])),
        "score": pa.array(top_scores.reshape(-1)[keep].astype(np.float32)),
        "rank": pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), n_users)[keep]),
    })
