"""A trained factor model: predict, recommend, save and load.

Parameters live as NumPy arrays (cheap to pickle-free save, inspect, ship);
scoring runs through JAX on whatever device is default. Scoring runs in
chunks sized from one working-set budget (:mod:`factorflow.engine.memory`), so it
needs the model plus a fixed scratch space however many ratings or users are
scored; each call is padded to a power of two, so repeated calls reuse a few
compiled programs instead of compiling one per request size.

Whatever the model was trained with (biases off, non-negative factors, a
custom loss) is already in the arrays: switched-off biases are zeros, so the
one scoring formula ``mean + b_u + b_i + <p_u, q_i>`` serves every model. The
training settings are kept as provenance (``model.config``); what folding in
new users and items needs (:mod:`factorflow.engine.fold_in`) is kept as
``model.fold_in_spec``, saved with the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import json

import jax
import jax.numpy as jnp
import numpy as np

from factorflow.engine import dispatch, top_n
from factorflow.engine.config import TrainConfig
from factorflow.engine.factors import FactorParams, predict
from factorflow.engine.fold_in import FoldInSpec, anonymous_row, fold_in_params
from factorflow.engine.fold_in_priors import (fallback_spec, spec_arrays, spec_from_arrays,
                                              spec_from_fit)
from factorflow.engine.memory import ratings_per_chunk, spans, users_per_batch
from factorflow.engine.results import FitResult
from factorflow.engine.triplets import Triplets
from factorflow.engine.artifacts import ArtifactError, load_npz, reading, save_npz

FORMAT_VERSION = 1
_FIELDS = FactorParams._fields


_predict = jax.jit(predict)


def _padded_size(n: int, cap: int | None = None) -> int:
    """``n`` rounded up to a power of two (at most ``cap``): few distinct shapes."""
    size = 1 << max(n - 1, 0).bit_length()
    return size if cap is None else min(cap, size)


def _predict_padded(params: FactorParams, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predictions ``[n]`` float32 of ``[n]`` int32 ids, scored as one padded call."""
    n = users.shape[0]
    padded = np.zeros((2, _padded_size(n)), np.int32)
    padded[0, :n], padded[1, :n] = users, items
    return np.asarray(_predict(params, padded[0], padded[1]), np.float32)[:n]


def _check_scale(clip: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in clip)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
        raise ValueError(f"clip must be a finite (min, max) with min <= max, got {clip}")
    return lo, hi


class FactorModel:
    """Biased matrix-factorization model ``mean + b_u + b_i + <p_u, q_i>``.

    Build one with :meth:`fit`, :meth:`load`, or from :class:`FactorParams`.
    After :meth:`fit` the training report is kept as ``model.fit_result``
    (None for models built any other way), so ``fit`` returns just the model;
    ``model.config`` holds the training settings (a dict, None if unknown),
    and ``model.fold_in_spec`` what :meth:`fold_in` needs (None if unknown:
    see :func:`factorflow.engine.fold_in_priors.fallback_spec`); both survive
    :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        params: FactorParams,
        *,
        fit_result: FitResult | None = None,
        config: dict[str, Any] | None = None,
        fold_in_spec: FoldInSpec | None = None,
    ) -> None:
        arrays = FactorParams(*(np.asarray(p, np.float32) for p in params))
        if arrays.user_factors.ndim != 2 or arrays.item_factors.ndim != 2:
            raise ValueError(
                f"factors must be 2-D, got user_factors {arrays.user_factors.shape}, "
                f"item_factors {arrays.item_factors.shape}"
            )
        (n_users, rank), n_items = arrays.user_factors.shape, arrays.item_factors.shape[0]
        expected = FactorParams((), (n_users,), (n_items,), (n_users, rank), (n_items, rank))
        for name, want, got in zip(_FIELDS, expected, arrays):
            if got.shape != want:
                raise ValueError(f"{name} has shape {got.shape}, expected {want}")
        self.params = arrays
        self.fit_result = fit_result
        self.config = None if config is None else dict(config)
        self.fold_in_spec = fold_in_spec
        self._device_params: FactorParams | None = None

    @property
    def n_users(self) -> int:
        return int(self.params.user_factors.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.params.item_factors.shape[0])

    @property
    def rank(self) -> int:
        return int(self.params.user_factors.shape[1])

    def __repr__(self) -> str:
        return f"FactorModel(n_users={self.n_users}, n_items={self.n_items}, rank={self.rank})"

    @classmethod
    def fit(
        cls,
        train: Triplets,
        *,
        n_users: int,
        n_items: int,
        valid: Triplets | None = None,
        config: TrainConfig = TrainConfig(),
        **kwargs: Any,
    ) -> "FactorModel":
        """Train with :func:`factorflow.engine.dispatch.fit` and wrap the result.

        Args:
            train: training ratings.
            n_users: number of users.
            n_items: number of items.
            valid: optional validation ratings (early stopping, best epoch).
            config: training settings.
            **kwargs: passed on to :func:`factorflow.engine.dispatch.fit` (``loss``,
                ``log``, ``patience``, ``key``, ``on_epoch``).

        Returns:
            The model; its :class:`FitResult` is ``model.fit_result``.
        """
        result = dispatch.fit(
            train, n_users=n_users, n_items=n_items, valid=valid, config=config, **kwargs
        )
        return cls(result.params, fit_result=result, config=config._asdict(),
                   fold_in_spec=spec_from_fit(result.params, config, result.history))

    def _on_device(self) -> FactorParams:
        if self._device_params is None:
            self._device_params = FactorParams(*(jnp.asarray(p) for p in self.params))
        return self._device_params

    def _check_ids(self, ids: np.ndarray, limit: int, name: str) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= limit):
            raise ValueError(f"{name} range [{ids.min()}, {ids.max()}] outside [0, {limit})")

    def predict(self, users: np.ndarray, items: np.ndarray, *,
                chunk_size: int | None = None) -> np.ndarray:
        """Predicted ratings ``[n]`` float32 for ``[n]`` user and item indices.

        Args:
            users: ``[n]`` user indices.
            items: ``[n]`` item indices.
            chunk_size: ratings scored per compiled call (default
                :func:`factorflow.engine.memory.ratings_per_chunk` of the model's width):
                scoring holds one chunk's ``[chunk, width]`` gathers, never all
                ``n`` at once.
        """
        users = np.asarray(users, np.int32)
        items = np.asarray(items, np.int32)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(
                f"users {users.shape} and items {items.shape} must be 1-D of one length"
            )
        # JAX clamps out-of-range gathers silently; a wrong id must fail loudly.
        self._check_ids(users, self.n_users, "users")
        self._check_ids(items, self.n_items, "items")
        size = ratings_per_chunk(self.rank) if chunk_size is None else chunk_size
        out = np.empty(users.shape[0], np.float32)
        params = self._on_device()
        for start, stop in spans(users.shape[0], size):
            out[start:stop] = _predict_padded(params, users[start:stop], items[start:stop])
        return out

    def recommend(
        self,
        userids: np.ndarray,
        N: int = 10,
        *,
        seen: Triplets | None = None,
        filter_already_liked: bool = True,
        batch_size: int | None = None,
        clip: tuple[float, float] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` highest-scoring items for each user.

        Users are scored in batches against every item, and each batch's
        best items found by :func:`factorflow.engine.top_n.top_k` (exact). With
        ``filter_already_liked`` the items each user has in ``seen`` score
        -inf and are never returned. The result always has ``N`` columns: where
        fewer than ``N`` items are left to recommend (``N > n_items``, or a user
        who has seen nearly everything) the missing slots hold id -1 and score
        -inf, after the real recommendations.

        Args:
            userids: ``[b]`` user indices.
            N: recommendations per user, >= 1.
            seen: ratings whose (user, item) pairs to exclude, e.g. the training set.
            filter_already_liked: exclude ``seen`` items; False ignores ``seen``.
            batch_size: users scored per compiled call; every call gets this many
                rows (the last batch is padded) so the function compiles once.
                Default :func:`factorflow.engine.memory.users_per_batch`: a
                ``[batch, n_items]`` block within the working-set budget.
            clip: ``(min, max)`` of the rating scale: the returned scores are
                clipped to it, after ranking by the unclipped scores (so the
                order is the model's, and a score reads as a rating).
            progress: called after each batch with the number of users done.

        Returns:
            ``(ids [b, N] int32, scores [b, N] float32)``, best first.
        """
        userids = np.asarray(userids, np.int32)
        if userids.ndim != 1:
            raise ValueError(f"userids must be 1-D, got shape {userids.shape}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        batch_size = users_per_batch(self.n_items, self.rank) if batch_size is None else batch_size
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._check_ids(userids, self.n_users, "userids")
        scale = None if clip is None else _check_scale(clip)
        b = userids.shape[0]
        ids = np.full((b, N), -1, np.int32)
        scores = np.full((b, N), -np.inf, np.float32)
        if b == 0:
            return ids, scores
        # Round small requests up to a power of two: a handful of shapes in all
        # instead of one compile per distinct request size.
        rows = _padded_size(b, batch_size)
        k = min(N, self.n_items)
        seen_index = None
        if filter_already_liked and seen is not None:
            self._check_ids(np.asarray(seen.users), self.n_users, "seen users")
            self._check_ids(np.asarray(seen.items), self.n_items, "seen items")
            seen_index = top_n.index_seen(seen.users, seen.items, self.n_users)
        items = top_n.block_items(self.params.mean, self.params.item_factors,
                                  self.params.item_bias)
        for start, stop in spans(b, rows):
            batch = np.zeros(rows, np.int32)
            batch[: stop - start] = userids[start:stop]
            pairs = top_n.seen_pairs(seen_index, userids[start:stop], rows)
            top_scores, top_ids = top_n.top_k(self.params.user_factors[batch],
                                              self.params.user_bias[batch], items, *pairs, k=k)
            ids[start:stop, :k] = np.asarray(top_ids)[: stop - start]
            scores[start:stop, :k] = np.asarray(top_scores)[: stop - start]
            if progress is not None:
                progress(stop)
        ids[~np.isfinite(scores)] = -1
        scores[ids < 0] = -np.inf
        if scale is not None:
            np.clip(scores, *scale, out=scores, where=ids >= 0)
        return ids, scores

    def _spec(self, ratings: Triplets) -> FoldInSpec:
        return self.fold_in_spec or fallback_spec(self.params, self.config, ratings)

    def fold_in(self, ratings: Triplets) -> "FactorModel":
        """A new model with the users and items ``ratings`` names past this one's ends.

        Each new row is its conditional mean from its own ratings, the other
        side held fixed (:func:`factorflow.engine.fold_in.fold_in_params`:
        ratings between a new user and a new item, or between known rows, are
        ignored; this model's rows are unchanged). The new model keeps this
        one's config and fold-in spec.
        """
        spec = self._spec(ratings)
        return FactorModel(fold_in_params(self.params, ratings, spec).params,
                           config=self.config, fold_in_spec=spec)

    def recommend_for(self, item_ids: np.ndarray, ratings: np.ndarray,
                      N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The top ``N`` items for an anonymous user who rated ``item_ids [n]`` ``ratings [n]``.

        The user is folded in (:func:`factorflow.engine.fold_in.anonymous_row`)
        and scored by :meth:`recommend` without joining the model; the rated
        items are never returned.

        Returns:
            ``(ids [N] int32, scores [N] float32)``, best first; id -1 and
            score -inf where fewer than ``N`` items are left.
        """
        item_ids, ratings = np.asarray(item_ids, np.int32), np.asarray(ratings, np.float32)
        self._check_ids(item_ids, self.n_items, "item_ids")
        seen = Triplets(np.zeros_like(item_ids), item_ids, ratings)
        row = anonymous_row(self.params, item_ids, ratings,
                            self._spec(seen._replace(users=seen.users + self.n_users)))
        one = FactorModel(self.params._replace(user_bias=row[None, -1],
                                               user_factors=row[None, :-1]))
        ids, scores = one.recommend(np.zeros(1, np.int32), N, seen=seen)
        return ids[0], scores[0]

    def save(self, path: str | Path) -> None:
        """Write the parameters, a format version and the training settings
        (JSON text, when known) to an ``.npz`` file, atomically (a temporary
        file beside it, renamed over it when complete)."""
        extras = {} if self.config is None else {
            "config_json": np.array(json.dumps(self.config, sort_keys=True, default=str))}
        if self.fold_in_spec is not None:
            extras.update(spec_arrays(self.fold_in_spec))
        save_npz(
            path,
            format_version=np.int32(FORMAT_VERSION),
            **{name: value for name, value in zip(_FIELDS, self.params)},
            **extras,
        )

    @classmethod
    def load(cls, path: str | Path) -> "FactorModel":
        """Read a model written by :meth:`save` (no pickling involved).

        Raises:
            ArtifactError: the file is not a readable ``.npz``, is of another
                format version, or lacks a parameter array.
        """
        data = load_npz(path, ())
        version = int(data["format_version"]) if "format_version" in data else None
        if version != FORMAT_VERSION:
            raise ArtifactError(path, f"is model format version {version}; this code reads "
                                f"{FORMAT_VERSION}")
        missing = [name for name in _FIELDS if name not in data]
        if missing:
            raise ArtifactError(path, f"lacks the arrays {missing}")
        with reading(path):
            config = json.loads(str(data["config_json"])) if "config_json" in data else None
            spec = spec_from_arrays(data)
        return cls(FactorParams(*(data[name] for name in _FIELDS)), config=config,
                   fold_in_spec=spec)
