"""Warm start: a fit that begins at a previous model's rows, matched by id, instead of at random.

A daily run sees mostly the users and items it saw yesterday. Starting from
yesterday's model, the chain (or the optimizer) only has to absorb the new
ratings, so it needs a fraction of a cold run's sweeps (tests/bench/warm_start.py
measures it on MovieLens). The pieces, all pure:

* :func:`incompatibility`: why a previous model cannot seed this fit (rank or
  loss changed, no training settings, non-finite values), or None.
* :func:`match_ids`: where each new id was in the previous model, for ids that
  are strings or integers, with users and items added, removed or reordered.
* :func:`align`: the previous parameters gathered onto the new index space,
  cut to the fit's rank (:func:`factorflow.engine.gibbs.averaging.top_rank_factors`).
* :func:`warm_start`: all three, one log line, a :class:`WarmStart` or None.
* :func:`blend`: the engines' start, known rows from the warm start and the
  rest from their own cold initialization (:func:`check_init` checks the shapes).

Gibbs (:mod:`factorflow.engine.gibbs.chain`) carries over rows, not
hyperparameters: the row priors and the noise precision are drawn from the
starting rows' statistics and their residuals, as in any sweep, so they
follow from the warm rows from the first half-step on. A published Gibbs model
is wider than its rank (an average of samples); a rank-``r`` chain starts at
the best rank-``r`` approximation of its interaction part.

The engine works on indices, so :func:`factorflow.engine.dispatch.fit` takes
the resolved :class:`WarmStart` as ``init``; ``TrainConfig.init_from`` only
names the request (and is kept as provenance). A caller that holds the id maps
resolves it: the Airflow stage calls :func:`warm_start` with its own id maps,
the CLI :func:`factorflow.engine.warm_files.warm_start_from` with a path.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Protocol

import numpy as np

from factorflow.choices import SAMPLER_NAMES
from factorflow.engine.config import TrainConfig
from factorflow.engine.factors import FactorParams
from factorflow.engine.gibbs.averaging import top_rank_factors

#: Share of ``epochs`` a warm-started Gibbs fit runs (:func:`warm_epochs`): 8 of 60 sweeps.
WARM_SHARE = 1 / 8
#: Burn-in of a warm-started chain. None: it starts in the posterior's bulk, and its
#: first sweep keeps the conditional means given the previous rows, a good sample.
WARM_BURN_IN = 0


class PreviousModel(Protocol):
    """What a warm start reads of a previous model: a :class:`~factorflow.engine.model.FactorModel`."""

    params: FactorParams
    config: dict[str, Any] | None


class WarmStart(NamedTuple):
    """A previous model's parameters on the new index space, and which rows they cover.

    Attributes:
        params: NumPy float32 parameters: ``mean []``, ``user_bias [n_users]``,
            ``item_bias [n_items]``, ``user_factors [n_users, rank]``,
            ``item_factors [n_items, rank]``; rows not ``known`` and columns
            ``>= width`` are zero (the engines fill them as a cold start would).
        user_known: ``[n_users]`` bool, the users the previous model had.
        item_known: ``[n_items]`` bool, the items the previous model had.
        width: leading factor columns that come from the previous model
            (``rank`` unless its interaction part has fewer directions).
        source: where it came from, e.g. the path, for logs and reports.
    """

    params: FactorParams
    user_known: np.ndarray
    item_known: np.ndarray
    width: int
    source: str


def warm_epochs(epochs: int) -> int:
    """Sweeps of a warm-started Gibbs fit: ``ceil(WARM_SHARE * epochs)``, at least 1.

    A warm chain starts where a cold one ends up after its burn-in, so it
    needs only enough sweeps to average: 8 of the default 60. (Gradient
    optimizers keep ``epochs``; ``patience`` stops them early.)
    """
    return max(1, math.ceil(WARM_SHARE * epochs))


def incompatibility(previous: PreviousModel, config: TrainConfig) -> str | None:
    """Why ``previous`` cannot seed a fit with ``config`` (a cold start follows), or None.

    The rank compared is the previous *training* rank (``config["rank"]``),
    not its factor width: a Gibbs model is published wider than its rank.
    """
    settings = previous.config
    if not settings or "rank" not in settings:
        return "the previous model holds no training settings (config)"
    if int(settings["rank"]) != config.rank:
        return f"rank changed ({settings['rank']} -> {config.rank})"
    before = settings.get("loss", "squared")
    if before != config.loss:
        return f"loss changed ({before!r} -> {config.loss!r})"
    if not all(np.all(np.isfinite(np.asarray(p))) for p in previous.params):
        return "the previous model holds non-finite values"
    return None


def match_ids(previous_ids, ids) -> tuple[np.ndarray, np.ndarray]:
    """Where each of ``ids`` was in ``previous_ids``.

    Ids are compared by value; when one side holds strings and the other
    integers they are compared as text (``"1001"`` matches ``1001``).

    Args:
        previous_ids: ``[m]`` distinct ids, the previous model's row order.
        ids: ``[n]`` distinct ids, the new row order.

    Returns:
        ``(positions [n] int64, known [n] bool)``: ``previous_ids[positions[j]]
        == ids[j]`` where ``known[j]``; ``positions`` is 0 elsewhere.
    """
    before, now = _as_ids(previous_ids), _as_ids(ids)
    if (before.dtype.kind in "US") != (now.dtype.kind in "US"):
        before, now = before.astype(str), now.astype(str)
    if before.size == 0 or now.size == 0:
        return np.zeros(now.shape[0], np.int64), np.zeros(now.shape[0], bool)
    order = np.argsort(before, kind="stable")
    slots = np.minimum(np.searchsorted(before[order], now), before.shape[0] - 1)
    known = before[order][slots] == now
    return np.where(known, order[slots], 0).astype(np.int64), known


def _as_ids(values) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {array.shape}")
    return array.astype(str) if array.dtype.kind == "O" else array


def align(params: FactorParams, user_rows: tuple[np.ndarray, np.ndarray],
          item_rows: tuple[np.ndarray, np.ndarray], rank: int) -> tuple[FactorParams, int]:
    """The previous parameters gathered onto the new rows, cut to ``rank`` factor columns.

    Args:
        params: the previous model's, factors ``[m_users, k]``, ``[m_items, k]``.
        user_rows, item_rows: :func:`match_ids`'s ``(positions [n], known [n])``.
        rank: the new fit's rank. A factor part wider than ``rank`` (a Gibbs
            model) is cut to its best rank-``rank`` approximation first.

    Returns:
        ``(FactorParams, width)``: float32 NumPy, factors ``[n, rank]``; rows
        not known are zero, and so are columns ``>= width``.
    """
    uf, itf = (np.asarray(f, np.float64) for f in (params.user_factors, params.item_factors))
    if uf.shape[1] > rank:
        uf, itf = top_rank_factors(uf, itf, rank)
    width = min(uf.shape[1], rank)
    out = []
    for bias, factors, (positions, known) in ((params.user_bias, uf, user_rows),
                                              (params.item_bias, itf, item_rows)):
        rows = np.zeros((known.shape[0], rank), np.float32)
        rows[known, :width] = factors[positions[known], :width]
        out.append((np.where(known, np.asarray(bias, np.float32)[positions], 0.0)
                    .astype(np.float32), rows))
    (ub, uf_new), (ib, if_new) = out
    return FactorParams(np.float32(params.mean), ub, ib, uf_new, if_new), width


def warm_start(previous: PreviousModel, previous_user_ids, previous_item_ids, user_ids,
               item_ids, config: TrainConfig, log: Callable[[str], None] | None = None, *,
               source: str | None = None) -> WarmStart | None:
    """A :class:`WarmStart` for ``dispatch.fit(init=...)``, or None for a cold start.

    Args:
        previous: the previous model (a :class:`~factorflow.engine.model.FactorModel`).
        previous_user_ids, previous_item_ids: ``[m_users]``, ``[m_items]`` the
            previous model's ids, one per row (row ``j`` is index ``j``).
        user_ids, item_ids: ``[n_users]``, ``[n_items]`` the new fit's ids.
        config: the new fit's settings.
        log: gets one line: what was matched, or why a cold start follows.
        source: names the previous model in that line (default ``config.init_from``).

    Returns:
        The warm start, or None when :func:`incompatibility` gives a reason or
        no user and no item is known (a cold start; the log line says why).
    """
    log = log or (lambda line: None)
    source = source or config.init_from or "the previous model"
    reason = incompatibility(previous, config)
    n_before = tuple(np.shape(f)[0] for f in (previous.params.user_factors,
                                              previous.params.item_factors))
    if reason is None and (len(previous_user_ids), len(previous_item_ids)) != n_before:
        reason = (f"its id maps hold {len(previous_user_ids)} users and {len(previous_item_ids)} "
                  f"items, its arrays {n_before[0]} and {n_before[1]}")
    rows = None if reason else (match_ids(previous_user_ids, user_ids),
                                match_ids(previous_item_ids, item_ids))
    if rows is not None and not (rows[0][1].any() or rows[1][1].any()):
        reason = "no user or item id in common"
    if reason:
        log(f"warm start from {source} not possible: {reason}; cold start")
        return None
    params, width = align(previous.params, *rows, config.rank)
    users, items = rows[0][1], rows[1][1]
    budget = (f"; {warm_epochs(config.epochs)} of {config.epochs} sweeps"
              if config.optimizer in SAMPLER_NAMES else "")
    log(f"warm start from {source}: {users.sum():,} of {users.size:,} users and "
        f"{items.sum():,} of {items.size:,} items known (rank {config.rank}, {width} warm "
        f"factor columns){budget}")
    return WarmStart(params, users, items, width, source)


def check_init(init: WarmStart, *, n_users: int, n_items: int, rank: int) -> None:
    """Raise ``ValueError`` when ``init`` was built for other index ranges or another rank."""
    want = ((n_users, rank), (n_items, rank), (n_users,), (n_items,))
    got = tuple(np.shape(a) for a in (init.params.user_factors, init.params.item_factors,
                                      init.user_known, init.item_known))
    if got != want:
        raise ValueError(f"the warm start from {init.source} has user/item factors and masks "
                         f"of shapes {got}, this fit needs {want}: build it with "
                         "warm_start(...) for this fit's ids and config")


def blend(init: WarmStart, cold: FactorParams, xp: Any = np, *, biases: bool = True
          ) -> FactorParams:
    """``cold`` with the warm start's known rows: their biases and leading ``width`` factor columns.

    ``cold`` is the engine's own cold-start initialization (same shapes as
    ``init.params``, or with a leading ``[restarts]`` axis); new rows and the
    columns the previous model lacks keep it, as a cold start would.
    ``mean`` is the previous model's, which its biases are relative to;
    ``biases=False`` (a fit without them) keeps ``cold``'s mean and biases.
    ``xp`` is ``numpy`` or ``jax.numpy``.
    """
    warm, width = init.params, init.width
    columns = np.arange(np.shape(warm.user_factors)[1]) < width

    def rows(known, new, old):
        return xp.where(known, xp.asarray(new, old.dtype), old)

    factors = (rows(init.user_known[:, None] & columns, warm.user_factors, cold.user_factors),
               rows(init.item_known[:, None] & columns, warm.item_factors, cold.item_factors))
    if not biases:
        return cold._replace(user_factors=factors[0], item_factors=factors[1])
    return FactorParams(
        xp.broadcast_to(xp.asarray(warm.mean, cold.mean.dtype), xp.shape(cold.mean)),
        rows(init.user_known, warm.user_bias, cold.user_bias),
        rows(init.item_known, warm.item_bias, cold.item_bias), *factors)
