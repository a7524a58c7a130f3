"""Fold-in on MovieLens 100K: new users' accuracy against a full retrain, and its speed.

A seeded 10% of the users are held out of training entirely; half of each
held-out user's ratings (seeded) are folded into the model trained without
them, and the other half is the test set. The folded-in model's test RMSE is
compared with a full retrain on the training users plus those halves (the
same information, 0.01 allowed) and with the bias-only baseline fitted on
the same ratings (which fold-in must beat clearly). Speed: the time to fold
1,000 new users into the trained model (each a copy of a held-out user's
half), once to compile and then warm, and one anonymous user's
``recommend_for``. Default settings (Gibbs), and adam's defaults beside it::

    python -m tests.bench.fold_in [--data-dir ../shared/data/ml-100k] [--optimizers gibbs adam]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.movielens import DEFAULT_DATA_DIR

HELD_OUT = 0.1
N_TIMED = 1000
#: Fold-in may be this much worse than the full retrain.
TOLERANCE = 0.01


def read_ml100k(data_dir: Path):
    """``(users, items, ratings)`` 0-based from ``u.data``; None when the file is absent."""
    path = Path(data_dir) / "u.data"
    if not path.is_file():
        return None
    data = np.loadtxt(path, dtype=np.int64, usecols=(0, 1, 2))
    return data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(np.float32)


def split_users(users, n_users: int, seed: int = 0):
    """``(order, held, fold)``: user renumbering that puts the held-out users last, their
    mask ``[n_users]``, and per rating whether it is folded in (else tested) if held out."""
    rng = np.random.default_rng(seed)
    held = rng.random(n_users) < HELD_OUT
    order = np.empty(n_users, np.int64)
    order[~held] = np.arange((~held).sum())
    order[held] = (~held).sum() + np.arange(held.sum())
    return order, held, rng.random(users.shape[0]) < 0.5


def _rmse(model, t) -> float:
    from factorflow.engine.metrics import rmse

    return rmse(model.predict(t.users, t.items), t.ratings)


def _timed_users(fold, n_known: int, seed: int = 1):
    """``N_TIMED`` new users (indices from ``n_known``), each a held-out user's fold half."""
    from factorflow.engine import Triplets

    rng = np.random.default_rng(seed)
    sources = rng.choice(np.unique(fold.users), N_TIMED)
    parts = [(np.full(int(np.sum(fold.users == s)), n_known + k), fold.items[fold.users == s],
              fold.ratings[fold.users == s]) for k, s in enumerate(sources)]
    return Triplets(*(np.concatenate(a).astype(t) for a, t in
                      zip(zip(*parts), (np.int32, np.int32, np.float32))))


def compare(optimizer: str, train, fold, test, n_users: int, n_items: int) -> dict[str, Any]:
    """Fold-in against a full retrain and the baseline, and the fold-in's timings."""
    from factorflow.engine import FactorModel, TrainConfig, Triplets
    from factorflow.engine.metrics import fit_baseline, predict_baseline, rmse

    config = TrainConfig(optimizer=optimizer)
    n_known = n_users - int(np.unique(fold.users).size)
    t0 = time.perf_counter()
    model = FactorModel.fit(train, n_users=n_known, n_items=n_items, config=config)
    fit_seconds = time.perf_counter() - t0
    full = FactorModel.fit(Triplets.concat(train, fold), n_users=n_users, n_items=n_items,
                           config=config)
    t0 = time.perf_counter()
    folded = model.fold_in(fold)
    first_seconds = time.perf_counter() - t0
    base = fit_baseline(Triplets.concat(train, fold), n_users=n_users, n_items=n_items)
    record = {"optimizer": optimizer, "fit_seconds": fit_seconds, "width": model.rank,
              "fold_in_rmse": _rmse(folded, test), "retrain_rmse": _rmse(full, test),
              "baseline_rmse": rmse(predict_baseline(base, test.users, test.items),
                                    test.ratings),
              "n_folded_users": n_users - n_known, "n_test": len(test),
              "first_fold_in_seconds": first_seconds}
    record["gap"] = record["fold_in_rmse"] - record["retrain_rmse"]
    record["within_tolerance"] = record["gap"] <= TOLERANCE
    record["beats_baseline_by"] = record["baseline_rmse"] - record["fold_in_rmse"]
    return {**record, **timings(model, _timed_users(fold, n_known), fold)}


def timings(model, many, fold) -> dict[str, Any]:
    """Seconds to fold in ``many`` (first call: compiling; then warm) and one ``recommend_for``."""
    t0 = time.perf_counter()
    model.fold_in(many)
    compile_seconds = time.perf_counter() - t0
    warm = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.fold_in(many)
        warm.append(time.perf_counter() - t0)
    first = fold.users == fold.users[0]
    items, ratings = fold.items[first][:10], fold.ratings[first][:10]
    model.recommend_for(items, ratings)
    t0 = time.perf_counter()
    model.recommend_for(items, ratings)
    return {"timed_users": int(np.unique(many.users).size), "timed_ratings": len(many),
            "first_call_seconds": compile_seconds, "warm_seconds": min(warm),
            "users_per_second": np.unique(many.users).size / min(warm),
            "recommend_for_seconds": time.perf_counter() - t0}


def run(data_dir: Path = DEFAULT_DATA_DIR,
        optimizers: tuple[str, ...] = ("gibbs", "adam")) -> dict[str, Any]:
    """The fold-in stage: per optimizer, accuracy against a retrain and the baseline, and speed."""
    data = read_ml100k(data_dir)
    if data is None:
        return {"skipped": f"MovieLens 100K (u.data) not found under {data_dir}"}
    from factorflow.engine import Triplets
    from factorflow.engine.runtime.cache import enable_compilation_cache

    enable_compilation_cache()
    u, i, r = data
    n_users, n_items = int(u.max()) + 1, int(i.max()) + 1
    order, held, fold_mask = split_users(u, n_users)
    nu = order[u].astype(np.int32)
    pick = lambda mask: Triplets(nu[mask], i[mask].astype(np.int32), r[mask])  # noqa: E731
    out = held[u]
    train, fold, test = pick(~out), pick(out & fold_mask), pick(out & ~fold_mask)
    results = {name: compare(name, train, fold, test, n_users, n_items) for name in optimizers}
    return {"data_dir": str(data_dir), "held_out_users": int(held.sum()), "n_train": len(train),
            "n_fold": len(fold), "n_test": len(test), "tolerance": TOLERANCE,
            "optimizers": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--optimizers", nargs="+", default=["gibbs", "adam"])
    args = parser.parse_args()
    print(json.dumps(run(args.data_dir, tuple(args.optimizers)), indent=2))


if __name__ == "__main__":
    main()
