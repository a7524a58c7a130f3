"""Hyperparameter sweeps: candidate settings from a search space, and the winner.

A search space maps :class:`factorflow.engine.config.TrainConfig` fields to lists of
values, e.g. ``{"rank": [8, 16, 32], "reg": [0.02, 0.05]}``. A grid search tries
every combination; a random search a seeded sample of them.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

from factorflow.engine.config import TrainConfig

SEARCHES = ("grid", "random")


def plan_candidates(space: Mapping[str, Sequence[Any]], *, search: str = "grid",
                    samples: int | None = None, seed: int = 0,
                    max_candidates: int = 64) -> list[dict[str, Any]]:
    """The settings each candidate trains with.

    Args:
        space: TrainConfig field -> non-empty list of values.
        search: ``"grid"`` (every combination) or ``"random"`` (``samples``
            distinct combinations drawn with ``seed``).
        samples: candidates drawn by a random search.
        seed: seed of the random draw.
        max_candidates: the most candidates a sweep may train.

    Returns:
        One dict per candidate, in a stable order.

    Raises:
        ValueError: naming the offending field or count.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if not isinstance(space, Mapping) or not space:
        raise ValueError("the search space must map TrainConfig fields to lists of values, "
                         f"e.g. {{'rank': [8, 16]}}; got {space!r}")
    for name, values in space.items():
        if name not in TrainConfig._fields:
            raise ValueError(f"unknown setting {name!r} in the search space; "
                             f"choose from {', '.join(TrainConfig._fields)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"search space field {name!r} must be a non-empty list, got {values!r}")
    names = sorted(space)
    grid = [dict(zip(names, combo)) for combo in itertools.product(*(space[n] for n in names))]
    if search == "random":
        if samples is None or not 1 <= int(samples) <= len(grid):
            raise ValueError(f"a random search needs 1 <= samples <= {len(grid)} "
                             f"(the grid's size), got {samples}")
        import numpy as np

        picks = np.random.default_rng(seed).choice(len(grid), size=int(samples), replace=False)
        grid = [grid[i] for i in sorted(picks)]
    if len(grid) > max_candidates:
        raise ValueError(f"the search space has {len(grid)} candidates, more than "
                         f"max_candidates={max_candidates}; shrink it or use a random search")
    return grid


def best_candidate(summaries: Sequence[Mapping[str, Any]]) -> int:
    """Index of the candidate with the lowest validation RMSE (ties: the first).

    Raises:
        ValueError: no candidate has a finite validation RMSE.
    """
    import math

    scored = [(s.get("valid_rmse"), k) for k, s in enumerate(summaries)]
    scored = [(v, k) for v, k in scored if v is not None and math.isfinite(v)]
    if not scored:
        raise ValueError("no candidate has a validation RMSE: set valid_fraction > 0")
    return min(scored)[1]
