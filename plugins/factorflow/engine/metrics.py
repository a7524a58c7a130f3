"""Rating-prediction and ranking metrics, and a bias-only baseline to beat.

Plain NumPy: these run on results already pulled off the accelerator and are
cheap next to training. :func:`chunked_metrics` scores a split a chunk at a
time, so a split of any size needs only one chunk's predictions in memory.
"""

from __future__ import annotations

from typing import Callable, Collection, NamedTuple, Sequence

import numpy as np

from factorflow.engine.triplets import Triplets
from factorflow.engine.memory import spans


def _pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # float64 sums: a float32 mean over millions of squared errors drifts in the
    # 4th digit, which is the digit model comparisons are made on.
    p = np.asarray(pred, np.float64)
    t = np.asarray(target, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} differ in shape")
    if p.size == 0:
        raise ValueError("no predictions to score")
    return p, t


def rmse(pred: np.ndarray, target: np.ndarray) -> float:
    """Root mean squared error of ``[n]`` predictions."""
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean(np.square(p - t))))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean absolute error of ``[n]`` predictions."""
    p, t = _pair(pred, target)
    return float(np.mean(np.abs(p - t)))


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict:
    """``{"rmse": float, "mae": float, "n": int}`` of ``[n]`` predictions."""
    p, t = _pair(pred, target)
    return {"rmse": rmse(p, t), "mae": mae(p, t), "n": int(p.size)}


def chunked_metrics(
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    data: Triplets,
    *,
    chunk_size: int,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """:func:`regression_metrics` of ``predict`` on ``data``, a chunk of ratings at a time.

    The squared and absolute errors are summed in float64 chunk by chunk, so
    memory holds one chunk's predictions however large the split; the result
    equals :func:`regression_metrics` on the whole split up to float64 rounding.

    Args:
        predict: ``predict(users [c], items [c]) -> [c]`` predictions.
        data: the ratings to score (at least one).
        chunk_size: ratings per ``predict`` call, >= 1.
        progress: called after each chunk with the number of ratings done.

    Returns:
        ``{"rmse": float, "mae": float, "n": int}``.
    """
    if len(data) == 0:
        raise ValueError("no predictions to score")
    squared = absolute = 0.0
    for start, stop in spans(len(data), chunk_size):
        p, t = _pair(predict(data.users[start:stop], data.items[start:stop]),
                     data.ratings[start:stop])
        error = p - t
        squared += float(np.square(error).sum())
        absolute += float(np.abs(error).sum())
        if progress is not None:
            progress(stop)
    n = len(data)
    return {"rmse": float(np.sqrt(squared / n)), "mae": absolute / n, "n": n}


class BaselineParams(NamedTuple):
    """Bias-only model ``r̂(u, i) = mean + user_bias[u] + item_bias[i]``.

    Attributes:
        mean: global mean rating (a Python float).
        user_bias: ``[n_users]`` float32.
        item_bias: ``[n_items]`` float32.
    """

    mean: float
    user_bias: np.ndarray
    item_bias: np.ndarray


def fit_baseline(
    train: Triplets,
    *,
    n_users: int,
    n_items: int,
    reg_user: float = 10.0,
    reg_item: float = 10.0,
    iters: int = 10,
) -> BaselineParams:
    """Fit user and item biases by alternating damped means.

    Each half-step sets a bias to the residual sum over its ratings divided by
    ``count + reg``: the exact minimizer of the ridge problem in that block, so
    every step lowers the regularized squared error. The damping keeps users
    or items with a handful of ratings near zero instead of at their noisy
    average. Users/items without ratings get bias 0.

    Args:
        train: training ratings.
        n_users: number of users.
        n_items: number of items.
        reg_user: damping of user biases (in units of ratings).
        reg_item: damping of item biases.
        iters: alternations (item then user); a few suffice.

    Returns:
        The fitted :class:`BaselineParams`.
    """
    if len(train) == 0:
        raise ValueError("train has no ratings")
    if reg_user < 0 or reg_item < 0:
        raise ValueError(f"reg_user and reg_item must be >= 0, got {reg_user}, {reg_item}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    u = np.asarray(train.users, np.int64)
    i = np.asarray(train.items, np.int64)
    r = np.asarray(train.ratings, np.float64)
    if u.min() < 0 or u.max() >= n_users or i.min() < 0 or i.max() >= n_items:
        raise ValueError(
            f"train indexes past ({n_users}, {n_items}): users in [{u.min()}, {u.max()}], "
            f"items in [{i.min()}, {i.max()}]"
        )
    mean = float(r.mean())
    user_count = np.bincount(u, minlength=n_users)
    item_count = np.bincount(i, minlength=n_items)
    # A zero denominator only happens with reg 0 and no ratings: the bias stays 0.
    user_den = np.maximum(user_count + reg_user, 1e-12)
    item_den = np.maximum(item_count + reg_item, 1e-12)
    bu = np.zeros(n_users)
    bi = np.zeros(n_items)
    for _ in range(iters):
        bi = np.bincount(i, r - mean - bu[u], minlength=n_items) / item_den
        bu = np.bincount(u, r - mean - bi[i], minlength=n_users) / user_den
    return BaselineParams(mean, bu.astype(np.float32), bi.astype(np.float32))


def predict_baseline(params: BaselineParams, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Baseline predictions ``[n]`` float32 for ``[n]`` user and item indices."""
    users = np.asarray(users)
    items = np.asarray(items)
    if users.shape != items.shape:
        raise ValueError(f"users {users.shape} and items {items.shape} differ in shape")
    return (params.mean + params.user_bias[users] + params.item_bias[items]).astype(np.float32)


# --- Ranking metrics: how good are the top-k lists? ---------------------------
#
# ``recommended`` is ``[b, K]`` item ids, best first, one row per user (what
# ``FactorModel.recommend`` returns; -1 marks an empty slot and never counts).
# ``relevant`` is, per row, the collection of that user's relevant held-out
# item ids. Each metric returns per-user values ``[b]`` (float64): the caller
# chooses how to average; :func:`ranking_metrics` does the usual thing.


def _hits(recommended: np.ndarray, relevant: Sequence[Collection[int]], k: int) -> np.ndarray:
    """``[b, k]`` bool: is the j-th recommendation of row u relevant."""
    rec = np.asarray(recommended)
    if rec.ndim != 2:
        raise ValueError(f"recommended must be [b, K], got shape {rec.shape}")
    if len(relevant) != rec.shape[0]:
        raise ValueError(
            f"{rec.shape[0]} rows of recommendations but {len(relevant)} relevant sets")
    if not 1 <= k <= rec.shape[1]:
        raise ValueError(f"k must be in [1, {rec.shape[1]}] (the lists' length), got {k}")
    top = rec[:, :k]
    return np.array([[item >= 0 and item in rel for item in row] for row, rel in
                     zip(top.tolist(), (set(r) for r in relevant))], bool).reshape(top.shape)


def precision_at_k(
    recommended: np.ndarray, relevant: Sequence[Collection[int]], *, k: int
) -> np.ndarray:
    """Per-user share of the top ``k`` that is relevant: ``hits / k``, ``[b]``."""
    return _hits(recommended, relevant, k).sum(1) / k


def recall_at_k(
    recommended: np.ndarray, relevant: Sequence[Collection[int]], *, k: int
) -> np.ndarray:
    """Per-user share of the relevant items found in the top ``k``, ``[b]``.

    ``hits / |relevant|``; nan for a user with no relevant items.
    """
    hits = _hits(recommended, relevant, k).sum(1)
    sizes = np.array([len(set(r)) for r in relevant], np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, hits / sizes, np.nan)


def ndcg_at_k(
    recommended: np.ndarray, relevant: Sequence[Collection[int]], *, k: int
) -> np.ndarray:
    """Per-user normalized discounted cumulative gain with binary relevance, ``[b]``.

    ``DCG = sum_j hit_j / log2(j + 2)`` over positions ``j = 0..k-1``, divided
    by the DCG of an ideal list (all ``min(k, |relevant|)`` relevant items
    first); nan for a user with no relevant items.
    """
    hits = _hits(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    dcg = hits @ discounts
    ideal_counts = np.minimum([len(set(r)) for r in relevant], k)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_counts]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, dcg / ideal, np.nan)


def relevant_items(
    heldout: Triplets, users: np.ndarray, *, threshold: float | None = None
) -> list[set[int]]:
    """Each of ``[b]`` users' held-out items rated ``>= threshold`` (all if None)."""
    u = np.asarray(heldout.users)
    i = np.asarray(heldout.items)
    keep = np.ones(u.shape, bool) if threshold is None else np.asarray(heldout.ratings) >= threshold
    by_user: dict[int, set[int]] = {}
    for user, item in zip(u[keep].tolist(), i[keep].tolist()):
        by_user.setdefault(user, set()).add(item)
    return [by_user.get(int(user), set()) for user in np.asarray(users).tolist()]


def ranking_metrics(
    recommended: np.ndarray,
    relevant: Triplets | Sequence[Collection[int]],
    *,
    k: int,
    users: np.ndarray | None = None,
    threshold: float | None = None,
) -> dict:
    """Mean precision@k, recall@k and NDCG@k over users with a relevant item.

    Args:
        recommended: ``[b, K]`` item ids, best first (-1 = empty slot), ``K >= k``.
        relevant: per-row collections of relevant item ids, or held-out
            ratings (:class:`Triplets`) from which they are taken with
            :func:`relevant_items`.
        k: list length to score.
        users: ``[b]`` user index of each row; needed with ``Triplets``
            (default ``arange(b)``).
        threshold: with ``Triplets``, the lowest rating that counts as relevant
            (None: every held-out item is relevant).

    Returns:
        ``{"precision_at_k", "recall_at_k", "ndcg_at_k": float, "k": int,
        "n_users": int}``; ``n_users`` counts the rows with at least one
        relevant item, the only ones averaged (metrics are nan if none).
    """
    rec = np.asarray(recommended)
    if isinstance(relevant, Triplets):
        rows = np.arange(rec.shape[0]) if users is None else np.asarray(users)
        if rows.shape != (rec.shape[0],):
            raise ValueError(f"users must be [{rec.shape[0]}], got shape {rows.shape}")
        relevant = relevant_items(relevant, rows, threshold=threshold)
    scored = np.array([len(r) > 0 for r in relevant], bool)
    out = {"k": int(k), "n_users": int(scored.sum())}
    for name, fn in (("precision_at_k", precision_at_k), ("recall_at_k", recall_at_k),
                     ("ndcg_at_k", ndcg_at_k)):
        values = fn(rec, relevant, k=k)
        out[name] = float(values[scored].mean()) if scored.any() else float("nan")
    return out
