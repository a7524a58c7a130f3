"""Fold-in: factors for users and items a model was not trained on, from their own ratings.

A new user's row is its conditional mean from its ratings with the items held
fixed, a new item's with the users held fixed
(:func:`factorflow.engine.conditionals.conditional_means`, which works for any
rows: re-folding a training user gives back, or approximates, its row). Which
noise precision ``alpha`` and row prior reproduce a model's own rows depends on
how it was trained: :mod:`factorflow.engine.fold_in_priors` derives them as a
:class:`FoldInSpec`, which the model keeps and saves.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from factorflow.engine.conditionals import RowPrior, RowRatings, conditional_means, side_rows
from factorflow.engine.factors import FactorParams
from factorflow.engine.triplets import Triplets

__all__ = ["FoldInSpec", "FoldedIn", "RowPrior", "RowRatings", "anonymous_row",
           "conditional_means", "count_folded", "fold_in_params", "side_rows"]


class FoldInSpec(NamedTuple):
    """What folding in needs from a model (see :mod:`factorflow.engine.fold_in_priors`).

    Attributes:
        alpha: the data term's weight (a Gibbs model's noise precision).
        loss: the training loss: a :func:`factorflow.engine.losses.resolve_loss` spec.
        users: the user rows' :class:`RowPrior`.
        items: the item rows' :class:`RowPrior`.
        biases: False keeps the folded-in biases at 0 (a model trained without).
        nonneg: clip the folded-in factors at 0 after every Newton step (a
            projected Newton iteration: close to, not exactly, the constrained optimum).
    """

    alpha: float
    loss: str
    users: RowPrior
    items: RowPrior
    biases: bool = True
    nonneg: bool = False


class FoldedIn(NamedTuple):
    """What :func:`fold_in_params` returns.

    Attributes:
        params: the extended model: ``[n_users', k]`` / ``[n_items', k]``, old rows unchanged.
        n_users_folded: new users that had ratings of known items.
        n_items_folded: new items that had ratings by known users.
        n_ignored: ratings that inform no new row (between a new user and a
            new item, or between two rows the model already has).
    """

    params: FactorParams
    n_users_folded: int
    n_items_folded: int
    n_ignored: int


def count_folded(ratings: Triplets, n_users: int, n_items: int) -> tuple[int, int, int]:
    """``(new users, new items, ignored ratings)`` :func:`fold_in_params` finds in ``ratings``.

    A new user counts when it rated a known item, a new item when a known
    user rated it; a rating between two new or two known rows is ignored.
    """
    new_u, new_i = np.asarray(ratings.users) >= n_users, np.asarray(ratings.items) >= n_items
    return (np.unique(np.asarray(ratings.users)[new_u & ~new_i]).size,
            np.unique(np.asarray(ratings.items)[new_i & ~new_u]).size,
            int(np.sum(new_u == new_i)))


def fold_in_params(params: FactorParams, ratings: Triplets, spec: FoldInSpec) -> FoldedIn:
    """Extend a model by the users and items ``ratings`` names past its ends.

    Users ``>= n_users`` are folded in from their ratings of known items (the
    items held fixed), items ``>= n_items`` from their ratings by known users
    (the users held fixed). A rating between a new user and a new item informs
    neither (neither side is known yet) and is ignored, as is one between two
    known rows: the model's rows never change. The new sizes are the largest
    index plus one; a new index without usable ratings gets a zero row, as
    training gives rows without ratings.

    Args:
        params: the model (NumPy or JAX arrays).
        ratings: ``[n]`` (user, item, rating) indices, any order.
        spec: the model's :class:`FoldInSpec`.

    Raises:
        ValueError: a negative index, or a loss fold-in cannot use.
    """
    u, i, r = (np.asarray(a, t) for a, t in zip(ratings, (np.int64, np.int64, np.float32)))
    if u.size and min(u.min(), i.min()) < 0:
        raise ValueError(f"negative index in ratings: users from {u.min()}, items from {i.min()}")
    (n_users, _), n_items = params.user_factors.shape, params.item_factors.shape[0]
    new_u, new_i = u >= n_users, i >= n_items
    sides = []
    for side, pick, rows, cols, start in (("users", new_u & ~new_i, u, i, n_users),
                                          ("items", new_i & ~new_u, i, u, n_items)):
        n_new = max(int(rows.max(initial=-1)) + 1 - start, 0)
        fixed = (side_rows(params.item_factors, params.item_bias) if side == "users" else
                 side_rows(params.user_factors, params.user_bias))
        x = conditional_means(fixed, float(params.mean),
                              RowRatings(rows[pick] - start, cols[pick], r[pick]),
                              n_rows=n_new, prior=getattr(spec, side), alpha=spec.alpha,
                              loss=spec.loss, biases=spec.biases, nonneg=spec.nonneg)
        has = np.bincount(rows[pick] - start, minlength=n_new) > 0
        sides.append(np.where(has[:, None], x, 0.0).astype(np.float32))
    xu, xi = sides
    grow = lambda old, new: np.concatenate([np.asarray(old, np.float32), new])  # noqa: E731
    out = FactorParams(np.float32(params.mean),
                       grow(params.user_bias, xu[:, -1]), grow(params.item_bias, xi[:, -1]),
                       grow(params.user_factors, xu[:, :-1]),
                       grow(params.item_factors, xi[:, :-1]))
    return FoldedIn(out, *count_folded(ratings, n_users, n_items))


def anonymous_row(params: FactorParams, items: np.ndarray, ratings: np.ndarray,
                  spec: FoldInSpec) -> np.ndarray:
    """``[k + 1]`` the fold-in row ``[factors, bias]`` of one user who rated ``items``.

    Args:
        params: the model.
        items: ``[n]`` item indices (known items).
        ratings: ``[n]`` their ratings.
        spec: the model's :class:`FoldInSpec`.
    """
    items = np.asarray(items, np.int32)
    x = conditional_means(side_rows(params.item_factors, params.item_bias), float(params.mean),
                          RowRatings(np.zeros_like(items), items, ratings), n_rows=1,
                          prior=spec.users, alpha=spec.alpha, loss=spec.loss,
                          biases=spec.biases, nonneg=spec.nonneg)
    return x[0]
