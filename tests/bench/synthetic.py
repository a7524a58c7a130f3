"""A large synthetic ratings set (MovieLens-25M-sized by default), generated vectorized.

``factorflow.warehouse.demo.generate_ratings`` draws with ``rng.choice(p=...)`` and
re-uniques an oversampled key set in a loop, which is slow and several GB at
25M. Here users and items are drawn by inverse CDF (one ``searchsorted`` per
side), duplicate pairs are dropped by one sort, and the ratings
(rank-8 structure + biases + noise, rounded to 1..5) are computed in chunks.
Duplicates are simply dropped: the set can end a little short of the asked
size (the count is reported). Runs as a child process and caches its output::

    python -m tests.bench.synthetic --out .bench/data/synthetic.npz --ratings 25000000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CHUNK = 2_000_000


def power_law_pairs(n_users: int, n_items: int, n_ratings: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(users, items)`` int32 pairs in random order, at most ``n_ratings``.

    User activity is Pareto(1.5)-distributed (capped so that no user is
    expected to rate more than a quarter of the items), item popularity is
    Zipf-like (rank ** -0.9, shuffled).
    """
    user_w = rng.pareto(1.5, n_users) + 1.0
    cap = user_w.sum() * 0.25 * n_items / n_ratings
    user_w = np.minimum(user_w, cap)
    item_w = (np.arange(1, n_items + 1, dtype=np.float64) ** -0.9)[rng.permutation(n_items)]
    user_cdf, item_cdf = np.cumsum(user_w), np.cumsum(item_w)
    user_cdf /= user_cdf[-1]
    item_cdf /= item_cdf[-1]

    keys = np.empty(0, np.int64)
    for _ in range(4):  # each round tops up what the duplicates took away
        missing = n_ratings - keys.size
        if missing <= 0:
            break
        m = int(missing * 1.1) + 1000
        u = np.minimum(np.searchsorted(user_cdf, rng.random(m)), n_users - 1)
        i = np.minimum(np.searchsorted(item_cdf, rng.random(m)), n_items - 1)
        keys = _sorted_distinct(np.concatenate([keys, u.astype(np.int64) * n_items + i]))
        del u, i
    if keys.size > n_ratings:
        keys = keys[np.sort(rng.choice(keys.size, n_ratings, replace=False))]
    rng.shuffle(keys)
    return (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` by sort and compare: NumPy 2's hash-based unique is far slower at 25M."""
    keys.sort()
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])]


def low_rank_ratings(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
                     rng: np.random.Generator, rank: int = 8, noise: float = 0.5) -> np.ndarray:
    """``[n]`` float32 ratings in 1..5: ``3.5 + b_u + b_i + <p_u, q_i> + noise``, rounded."""
    p = rng.normal(0, 1 / np.sqrt(rank), (n_users, rank)).astype(np.float32)
    q = rng.normal(0, 1, (n_items, rank)).astype(np.float32)
    b_u = rng.normal(0, 0.3, n_users).astype(np.float32)
    b_i = rng.normal(0, 0.4, n_items).astype(np.float32)
    out = np.empty(users.shape[0], np.float32)
    for start in range(0, users.shape[0], CHUNK):
        u, i = users[start:start + CHUNK], items[start:start + CHUNK]
        raw = 3.5 + b_u[u] + b_i[i] + np.einsum("nk,nk->n", p[u], q[i])
        raw += rng.normal(0, noise, u.shape[0]).astype(np.float32)
        out[start:start + CHUNK] = np.clip(np.round(raw), 1, 5)
    return out


def generate(path: Path, *, n_users: int, n_items: int, n_ratings: int, seed: int) -> dict:
    """Write ``users``, ``items`` (int32 indices) and ``ratings`` (float32) to ``path`` (.npz)."""
    rng = np.random.default_rng(seed)
    users, items = power_law_pairs(n_users, n_items, n_ratings, rng)
    ratings = low_rank_ratings(users, items, n_users, n_items, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, users=users, items=items, ratings=ratings,
             shape=np.array([n_users, n_items], np.int64))
    tmp.replace(path)
    return {"n_ratings": int(ratings.shape[0]),
            "n_users_rating": int(np.count_nonzero(np.bincount(users, minlength=n_users))),
            "n_items_rated": int(np.count_nonzero(np.bincount(items, minlength=n_items))),
            "mean_rating": float(ratings.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ratings", type=int, default=25_000_000)
    parser.add_argument("--users", type=int, default=162_000)
    parser.add_argument("--items", type=int, default=59_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    info = generate(args.out, n_users=args.users, n_items=args.items, n_ratings=args.ratings,
                    seed=args.seed)
    print(json.dumps({**info, "path": str(args.out), "seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
