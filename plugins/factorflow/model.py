"""A trained factor model: predict, recommend, save and load.

Parameters live as NumPy arrays (cheap to pickle-free save, inspect, ship);
scoring runs through JAX on whatever device is default. Scoring calls are
padded to a few fixed shapes (powers of two), so repeated calls reuse the
compiled programs instead of compiling one per request size.

Whatever the model was trained with (biases off, non-negative factors, a
custom loss) is already in the arrays: switched-off biases are zeros, so the
one scoring formula ``mean + b_u + b_i + <p_u, q_i>`` serves every model. The
training settings are kept only as provenance (``model.config``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import json

import jax
import jax.numpy as jnp
import numpy as np

from factorflow import training
from factorflow.matrix import Triplets
from factorflow.training import FactorParams, FitResult, TrainConfig

FORMAT_VERSION = 1
_FIELDS = FactorParams._fields


_predict = jax.jit(training.predict)


def _padded_size(n: int, cap: int | None = None) -> int:
    """``n`` rounded up to a power of two (at most ``cap``): few distinct shapes."""
    size = 1 << max(n - 1, 0).bit_length()
    return size if cap is None else min(cap, size)


@partial(jax.jit, static_argnames=("k",))
def _top_k(params: FactorParams, users: jax.Array, exclude: jax.Array, k: int):
    """Top-``k`` items ``([b, k] ids, [b, k] scores)`` of ``[b]`` users.

    ``exclude`` is ``[b, n_items]`` bool; excluded items score -inf.
    """
    scores = (
        params.mean
        + params.user_bias[users][:, None]
        + params.item_bias[None, :]
        + params.user_factors[users] @ params.item_factors.T
    )
    scores = jnp.where(exclude, -jnp.inf, scores)
    return jax.lax.top_k(scores, k)


class FactorModel:
    """Biased matrix-factorization model ``mean + b_u + b_i + <p_u, q_i>``.

    Build one with :meth:`fit`, :meth:`load`, or from :class:`FactorParams`.
    After :meth:`fit` the training report is kept as ``model.fit_result``
    (None for models built any other way), so ``fit`` returns just the model;
    ``model.config`` holds the training settings (a dict, None if unknown),
    and survives :meth:`save` / :meth:`load`.
    """

    def __init__(
        self,
        params: FactorParams,
        *,
        fit_result: FitResult | None = None,
        config: dict[str, Any] | None = None,
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
        """Train with :func:`factorflow.training.fit` and wrap the result.

        Args:
            train: training ratings.
            n_users: number of users.
            n_items: number of items.
            valid: optional validation ratings (early stopping, best epoch).
            config: training settings.
            **kwargs: passed on to :func:`factorflow.training.fit` (``loss``,
                ``log``, ``patience``, ``key``, ``on_epoch``).

        Returns:
            The model; its :class:`FitResult` is ``model.fit_result``.
        """
        result = training.fit(
            train, n_users=n_users, n_items=n_items, valid=valid, config=config, **kwargs
        )
        return cls(result.params, fit_result=result, config=config._asdict())

    def _on_device(self) -> FactorParams:
        if self._device_params is None:
            self._device_params = FactorParams(*(jnp.asarray(p) for p in self.params))
        return self._device_params

    def _check_ids(self, ids: np.ndarray, limit: int, name: str) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= limit):
            raise ValueError(f"{name} range [{ids.min()}, {ids.max()}] outside [0, {limit})")

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings ``[n]`` float32 for ``[n]`` user and item indices."""
        users = np.asarray(users, np.int32)
        items = np.asarray(items, np.int32)
        if users.shape != items.shape or users.ndim != 1:
            raise ValueError(
                f"users {users.shape} and items {items.shape} must be 1-D of one length"
            )
        # JAX clamps out-of-range gathers silently; a wrong id must fail loudly.
        self._check_ids(users, self.n_users, "users")
        self._check_ids(items, self.n_items, "items")
        n = users.shape[0]
        size = _padded_size(n)
        padded = [np.zeros(size, np.int32) for _ in range(2)]
        padded[0][:n], padded[1][:n] = users, items
        return np.asarray(_predict(self._on_device(), *padded), np.float32)[:n]

    def recommend(
        self,
        userids: np.ndarray,
        N: int = 10,
        *,
        seen: Triplets | None = None,
        filter_already_liked: bool = True,
        batch_size: int = 1024,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` highest-scoring items for each user.

        Users are scored in batches against every item. With
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

        Returns:
            ``(ids [b, N] int32, scores [b, N] float32)``, best first.
        """
        userids = np.asarray(userids, np.int32)
        if userids.ndim != 1:
            raise ValueError(f"userids must be 1-D, got shape {userids.shape}")
        if N < 1:
            raise ValueError(f"N must be >= 1, got {N}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._check_ids(userids, self.n_users, "userids")
        b = userids.shape[0]
        ids = np.full((b, N), -1, np.int32)
        scores = np.full((b, N), -np.inf, np.float32)
        if b == 0:
            return ids, scores
        # Round small requests up to a power of two: a handful of shapes in all
        # instead of one compile per distinct request size.
        rows = _padded_size(b, batch_size)
        k = min(N, self.n_items)
        seen_index = self._index_seen(seen) if (filter_already_liked and seen is not None) else None
        params = self._on_device()
        for start in range(0, b, rows):
            chunk = userids[start : start + rows]
            n = chunk.shape[0]
            padded = np.zeros(rows, np.int32)
            padded[:n] = chunk
            exclude = np.zeros((rows, self.n_items), bool)
            if seen_index is not None:
                exclude[self._seen_pairs(seen_index, chunk)] = True
            top_scores, top_ids = _top_k(params, padded, exclude, k=k)
            scores[start : start + n, :k] = np.asarray(top_scores)[:n]
            ids[start : start + n, :k] = np.asarray(top_ids)[:n]
        ids[~np.isfinite(scores)] = -1
        scores[ids < 0] = -np.inf
        return ids, scores

    def _index_seen(self, seen: Triplets) -> tuple[np.ndarray, np.ndarray]:
        """``(bounds [n_users + 1], items [n])``: user u saw ``items[bounds[u]:bounds[u+1]]``."""
        users = np.asarray(seen.users, np.int64)
        items = np.asarray(seen.items, np.int64)
        self._check_ids(users, self.n_users, "seen users")
        self._check_ids(items, self.n_items, "seen items")
        order = np.argsort(users, kind="stable")
        bounds = np.searchsorted(users[order], np.arange(self.n_users + 1))
        return bounds, items[order]

    @staticmethod
    def _seen_pairs(index: tuple[np.ndarray, np.ndarray], chunk: np.ndarray):
        """``(rows, items)`` of every seen item of every user in ``chunk``."""
        bounds, items = index
        starts, counts = bounds[chunk], bounds[chunk + 1] - bounds[chunk]
        rows = np.repeat(np.arange(chunk.shape[0]), counts)
        # Position of each pair inside its user's run: a global arange minus the
        # run's own offset in the concatenation.
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, items[np.repeat(starts, counts) + offsets]

    def save(self, path: str | Path) -> None:
        """Write the parameters, a format version and the training settings
        (JSON text, when known) to an ``.npz`` file."""
        extras = {} if self.config is None else {
            "config_json": np.array(json.dumps(self.config, sort_keys=True, default=str))}
        np.savez(
            path,
            format_version=np.int32(FORMAT_VERSION),
            **{name: value for name, value in zip(_FIELDS, self.params)},
            **extras,
        )

    @classmethod
    def load(cls, path: str | Path) -> "FactorModel":
        """Read a model written by :meth:`save` (no pickling involved)."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["format_version"]) if "format_version" in data else None
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{path}: model format version {version}, this code reads {FORMAT_VERSION}"
                )
            missing = [name for name in _FIELDS if name not in data]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}")
            config = json.loads(str(data["config_json"])) if "config_json" in data else None
            return cls(FactorParams(*(data[name] for name in _FIELDS)), config=config)
