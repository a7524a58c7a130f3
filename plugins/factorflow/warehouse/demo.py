"""A deterministic demo warehouse: low-rank ratings with noise and popularity skew.

The generated table has the shape every factorflow source must have:
``raw.ratings(user_id, item_id, rating, rated_at)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from factorflow.warehouse import open_warehouse


def generate_ratings(
    *,
    n_users: int = 3000,
    n_items: int = 2000,
    n_ratings: int = 200_000,
    rank: int = 8,
    noise: float = 0.5,
    rating_min: int = 1,
    rating_max: int = 5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Draw a synthetic ratings set with a known low-rank structure.

    Users and items get latent vectors and biases; a user's rating of an item
    is ``mean + b_u + b_i + <p_u, q_i> + noise``, rounded and clipped to the
    integer scale. Who rates what follows power laws (a few heavy users, a few
    blockbuster items), as in real rating data.

    Args:
        n_users: number of distinct users.
        n_items: number of distinct items.
        n_ratings: number of (user, item) pairs, all distinct.
        rank: rank of the true preference structure.
        noise: standard deviation of the rating noise.
        rating_min: lowest rating on the scale.
        rating_max: highest rating on the scale.
        seed: seed of everything random.

    Returns:
        Columns ``user_id [n] int64``, ``item_id [n] int64``,
        ``rating [n] float32`` and ``rated_at [n] datetime64[s]``.
    """
    if n_ratings > n_users * n_items // 2:
        raise ValueError(f"n_ratings={n_ratings} is too dense for {n_users}x{n_items}")
    rng = np.random.default_rng(seed)
    user_weight = rng.pareto(1.5, n_users) + 1.0
    item_weight = (np.arange(1, n_items + 1) ** -0.9)[rng.permutation(n_items)]

    # Oversample pairs, drop repeats, keep the first n_ratings: deterministic.
    keys = np.empty(0, np.int64)
    while keys.size < n_ratings:
        m = 2 * n_ratings
        u = rng.choice(n_users, m, p=user_weight / user_weight.sum())
        i = rng.choice(n_items, m, p=item_weight / item_weight.sum())
        keys = np.concatenate([keys, u.astype(np.int64) * n_items + i])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]
    keys = keys[:n_ratings]
    users, items = keys // n_items, keys % n_items

    scale = (rating_max - rating_min) / 4
    p = rng.normal(0, 1 / np.sqrt(rank), (n_users, rank)) * scale
    q = rng.normal(0, 1, (n_items, rank)) * scale
    b_u = rng.normal(0, 0.3 * scale, n_users)
    b_i = rng.normal(0, 0.4 * scale, n_items)
    mean = (rating_min + rating_max) / 2 + 0.5 * scale
    raw = mean + b_u[users] + b_i[items] + np.einsum("nk,nk->n", p[users], q[items])
    raw += rng.normal(0, noise * scale, n_ratings)
    rating = np.clip(np.round(raw), rating_min, rating_max).astype(np.float32)

    start = np.datetime64("2024-01-01T00:00:00", "s")
    rated_at = start + rng.integers(0, 365 * 24 * 3600, n_ratings).astype("timedelta64[s]")
    # Ids that are not indices: the pipeline must map them and give them back as is.
    return {
        "user_id": users + 1001,
        "item_id": items + 50001,
        "rating": rating,
        "rated_at": rated_at,
    }


def write_demo_warehouse(
    path: str | Path, *, table: str = "raw.ratings", **generate_kwargs: Any
) -> dict[str, Any]:
    """Create (or replace) the ratings table in a DuckDB file or a PostgreSQL database.

    Only the source table is replaced; published ``factorflow.*`` tables in the
    same warehouse are left alone, so running the demo twice keeps earlier models.

    Args:
        path: DuckDB database file (its directory is created if needed), or a
            ``postgresql://`` URI.
        table: ``schema.table`` to write.
        **generate_kwargs: passed to :func:`generate_ratings`.

    Returns:
        ``{"warehouse": path, "table": table, "n_ratings": n}``.
    """
    import pyarrow as pa

    warehouse = open_warehouse(path)
    n = warehouse.replace_table(table, pa.table(generate_ratings(**generate_kwargs)))
    return {"warehouse": warehouse.name, "table": table, "n_ratings": n}
