"""What ``factorflow fit`` reports with: predictions where an id may be unknown, JSON-safe values."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

UNKNOWN = -1  # index of an id absent from the training file


def predict_open(params, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predictions ``[n]`` where user or item indices may be :data:`UNKNOWN`.

    An unknown side contributes neither bias nor factors: a known item with an
    unknown user is ``mean + b_i``, both unknown is ``mean``. NumPy on the host
    (the per-epoch test RMSE calls this with every epoch's model, whose width
    may change from one epoch to the next: JAX would compile each new width).
    """
    users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
    ku, ki = users != UNKNOWN, items != UNKNOWN
    u, i = np.where(ku, users, 0), np.where(ki, items, 0)
    uf, itf = (np.asarray(f, np.float32) for f in (params.user_factors, params.item_factors))
    bu = np.asarray(params.user_bias, np.float64)[u]
    bi = np.asarray(params.item_bias, np.float64)[i]
    mean = float(np.asarray(params.mean))
    full = mean + bu + bi + np.einsum("nk,nk->n", uf[u], itf[i]).astype(np.float64)
    return np.where(ku & ki, full, mean + np.where(ku, bu, 0.0) + np.where(ki, bi, 0.0))


def json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars made Python, tuples listed, nan/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # paths, callables: their readable form
