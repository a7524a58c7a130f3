"""Rating-prediction metrics and a bias-only baseline to beat.

Plain NumPy: these run on results already pulled off the accelerator and are
cheap next to training.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from factorflow.matrix import Triplets


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
