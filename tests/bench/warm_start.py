"""Warm start on MovieLens 100K: yesterday's model, today's ratings, a fraction of a cold fit's time.

Per fold ``uN``: a cold fit (default settings: Gibbs, 60 sweeps) on a seeded
random 90% of ``uN.base`` is "yesterday's model". Today's ratings are all of
``uN.base``: a warm fit from yesterday's model (what a user gets by default
when warm-starting: :func:`factorflow.engine.warm.warm_epochs` sweeps, 8 of
60, no burn-in; ids matched through the id maps, new users and items start
cold) against a cold fit with the same settings. Both are scored on
``uN.test`` (unseen ids from the mean and known biases, as ``factorflow fit``
does) and timed in this process, interleaved, ``repeats`` times each (median;
the warm time includes matching the ids and cutting the previous model to
rank). Yesterday's fit and a one-sweep fit on today's ratings run first,
untimed, so both find the compiled programs for today's shapes loaded.
Target: warm test RMSE within 0.002 of cold in at most a third of its time. Run::

    python -m tests.bench.warm_start [--data-dir DIR] [--folds N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import progress
from tests.bench.movielens import DEFAULT_DATA_DIR, find_folds

#: Target: the warm run's test RMSE at most this far above the cold run's ...
RMSE_TOLERANCE = 0.002
#: ... in at most this share of its fit time.
TIME_SHARE = 1 / 3
#: Share of a fold's training ratings yesterday's model saw.
YESTERDAY_SHARE = 0.9


def _encode(frame):
    """``(EncodedRatings, user ids [n_users], item ids [n_items])`` of a ratings frame."""
    from factorflow.engine.ids import encode_ratings

    data = encode_ratings(frame["user_id"].to_numpy(), frame["item_id"].to_numpy(),
                          frame["rating"].to_numpy())
    return (data, data.users.ids(np.arange(len(data.users))),
            data.items.ids(np.arange(len(data.items))))


def _test_rmse(params, user_ids, item_ids, test) -> float:
    """RMSE on the test frame; ids the fit never saw predict from the mean and known biases."""
    from factorflow.cli.fit_output import UNKNOWN, predict_open
    from factorflow.engine.metrics import rmse
    from factorflow.engine.warm import match_ids

    (u, ku), (i, ki) = (match_ids(ids, test[column].to_numpy())
                        for ids, column in ((user_ids, "user_id"), (item_ids, "item_id")))
    return rmse(predict_open(params, np.where(ku, u, UNKNOWN), np.where(ki, i, UNKNOWN)),
                test["rating"].to_numpy())


def _timed(fn) -> tuple[Any, float]:
    started = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - started


def run_fold(name: str, base: str, test_path: str, *, repeats: int, seed: int) -> dict[str, Any]:
    """One fold's cold and warm fits on all of ``base``: test RMSE, seconds, sweeps."""
    from factorflow.cli.readers import read_ratings
    from factorflow.engine import FactorModel, TrainConfig, fit
    from factorflow.engine.warm import warm_start

    today, test = read_ratings(base), read_ratings(test_path)
    keep = np.random.default_rng(seed).random(today.height) < YESTERDAY_SHARE
    (old, old_users, old_items), (new, users, items) = _encode(today.filter(keep)), _encode(today)
    config = TrainConfig(seed=seed)
    yesterday = FactorModel.fit(old.triplets, n_users=len(old_users), n_items=len(old_items),
                                config=config)
    shape = dict(n_users=len(users), n_items=len(items))
    fit(new.triplets, config=config._replace(epochs=1), **shape)  # loads today's programs

    def cold():
        return fit(new.triplets, config=config, **shape)

    def warm():
        init = warm_start(yesterday, old_users, old_items, users, items,
                          config._replace(init_from=f"{name} yesterday"), progress)
        return fit(new.triplets, config=config, init=init, **shape)

    cold_s, warm_s = [], []
    for _ in range(repeats):  # interleaved: both see the same machine load
        cold_fit, seconds = _timed(cold)
        cold_s.append(seconds)
        warm_fit, seconds = _timed(warm)
        warm_s.append(seconds)
    record = {
        "fold": name, "n_yesterday": len(old.triplets), "n_today": len(new.triplets),
        "new_users": len(users) - int(np.isin(users, old_users).sum()),
        "new_items": len(items) - int(np.isin(items, old_items).sum()),
        "yesterday_rmse": _test_rmse(yesterday.params, old_users, old_items, test),
        "cold_rmse": _test_rmse(cold_fit.params, users, items, test),
        "warm_rmse": _test_rmse(warm_fit.params, users, items, test),
        "cold_seconds": statistics.median(cold_s), "warm_seconds": statistics.median(warm_s),
        "cold_sweeps": len(cold_fit.history), "warm_sweeps": len(warm_fit.history),
        "cold_seconds_all": cold_s, "warm_seconds_all": warm_s,
    }
    record["rmse_difference"] = record["warm_rmse"] - record["cold_rmse"]
    record["time_ratio"] = record["warm_seconds"] / record["cold_seconds"]
    record["met"] = (record["rmse_difference"] <= RMSE_TOLERANCE
                     and record["time_ratio"] <= TIME_SHARE)
    progress(f"warm start {name}: RMSE cold {record['cold_rmse']:.4f}, warm "
             f"{record['warm_rmse']:.4f} ({record['rmse_difference']:+.4f}); seconds cold "
             f"{record['cold_seconds']:.3f}, warm {record['warm_seconds']:.3f} "
             f"(ratio {record['time_ratio']:.2f})")
    return record


def run(data_dir: Path = DEFAULT_DATA_DIR, n_folds: int = 5, *, repeats: int = 3,
        seed: int = 0) -> dict[str, Any]:
    """Every fold's record and their means; ``{"skipped": why}`` without the folds."""
    folds = find_folds(Path(data_dir), n_folds)
    if folds is None:
        return {"skipped": f"MovieLens 100K folds not found under {data_dir}"}
    records = [run_fold(*fold, repeats=repeats, seed=seed) for fold in folds]

    def mean(key: str) -> float:
        return statistics.fmean(r[key] for r in records)

    return {
        "folds": records, "n_folds": len(records),
        "cold_rmse": mean("cold_rmse"), "warm_rmse": mean("warm_rmse"),
        "rmse_difference": mean("rmse_difference"),
        "max_rmse_difference": max(r["rmse_difference"] for r in records),
        "cold_seconds": mean("cold_seconds"), "warm_seconds": mean("warm_seconds"),
        "time_ratio": mean("warm_seconds") / mean("cold_seconds"),
        "max_time_ratio": max(r["time_ratio"] for r in records),
        "target": {"rmse_tolerance": RMSE_TOLERANCE, "time_share": TIME_SHARE},
        "met": all(r["met"] for r in records),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the result as one JSON object (progress on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.data_dir, args.folds, repeats=args.repeats, seed=args.seed)
    if "skipped" in result:
        progress(f"warm start: skipped: {result['skipped']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
