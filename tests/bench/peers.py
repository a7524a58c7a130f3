"""Peer recommenders on MovieLens folds: Surprise SVD and Spark ALS.

Runs in the peers' own venv (``.bench/venv``), one method per process::

    .bench/venv/bin/python -m tests.bench.peers surprise --fold u1 BASE TEST ...
    .bench/venv/bin/python -m tests.bench.peers spark --fold u1 BASE TEST ...

and prints one JSON object: ``{"method", "versions", "settings", "folds": [...]}``
with, per fold, ``rmse``, ``mae``, ``fit_seconds`` (around the library's fit
call only), ``epochs``, ``n_train``, ``n_test`` and how many test ratings had
an unseen user or item.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from tests.bench.common import progress, versions


def _errors(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """``(rmse, mae)`` of ``(truth, prediction)`` pairs."""
    n = len(pairs)
    return (math.sqrt(sum((p - t) ** 2 for t, p in pairs) / n),
            sum(abs(p - t) for t, p in pairs) / n)


def surprise_svd(folds: list[tuple[str, str, str]], seed: int) -> dict[str, Any]:
    """Surprise's ``SVD()`` with its defaults (100 factors, 20 epochs, lr 0.005, reg 0.02).

    ``random_state`` is set (per fold) only to make runs repeatable. Test
    ratings with an unseen user or item are predicted as Surprise does: the
    known parts of ``mean + b_u + b_i + <p_u, q_i>``, clipped to [1, 5].
    """
    from surprise import SVD, Dataset, Reader, accuracy
    from surprise.model_selection import PredefinedKFold

    reader = Reader(line_format="user item rating timestamp", sep="\t", rating_scale=(1, 5))
    data = Dataset.load_from_folds([(base, test) for _, base, test in folds], reader=reader)
    records = []
    for (name, base, test), (trainset, testset) in zip(folds, PredefinedKFold().split(data)):
        algo = SVD(random_state=seed)
        started = time.perf_counter()
        algo.fit(trainset)
        fit_seconds = time.perf_counter() - started
        predictions = algo.test(testset)
        records.append({
            "fold": name, "rmse": accuracy.rmse(predictions, verbose=False),
            "mae": accuracy.mae(predictions, verbose=False), "fit_seconds": fit_seconds,
            "epochs": algo.n_epochs, "n_train": trainset.n_ratings, "n_test": len(testset),
            "n_test_unknown_user": sum(not _knows(trainset.to_inner_uid, p.uid)
                                       for p in predictions),
            "n_test_unknown_item": sum(not _knows(trainset.to_inner_iid, p.iid)
                                       for p in predictions),
        })
        progress(f"surprise SVD {name}: RMSE {records[-1]['rmse']:.4f}, fit {fit_seconds:.2f} s")
    return {"method": "surprise_svd", "folds": records,
            "settings": {"n_factors": 100, "n_epochs": 20, "lr_all": 0.005, "reg_all": 0.02,
                         "random_state": seed}}


def _knows(to_inner, raw_id: str) -> bool:
    try:
        to_inner(raw_id)
        return True
    except ValueError:
        return False


def spark_als(folds: list[tuple[str, str, str]], seed: int, rank: int,
              master: str) -> dict[str, Any]:
    """Spark ML ``ALS`` with its documented defaults except ``rank``.

    Defaults kept: maxIter 10, regParam 0.1, explicit feedback, 10 user and
    item blocks, ``coldStartStrategy="nan"``. The session is started and warmed
    before any timing; each fold's train and test frames are cached and counted
    first, so ``fit_seconds`` is ``als.fit`` alone (which materializes the
    factors). Test ratings whose user or item is unseen get NaN from Spark;
    they are filled with the fold's train global mean, not dropped.
    Predictions are not clipped (Spark does not clip).
    """
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    started = time.perf_counter()
    spark = (SparkSession.builder.master(master).appName("factorflow-bench")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "2g")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1000).selectExpr("sum(id)").collect()
    startup_seconds = time.perf_counter() - started
    schema = "user INT, item INT, rating FLOAT, ts LONG"
    records = []
    for name, base, test in folds:
        train = spark.read.csv(base, sep="\t", schema=schema).cache()
        test_df = spark.read.csv(test, sep="\t", schema=schema).cache()
        n_train, n_test = train.count(), test_df.count()
        mean = float(train.agg(F.avg("rating")).first()[0])
        als = ALS(rank=rank, userCol="user", itemCol="item", ratingCol="rating", seed=seed)
        t0 = time.perf_counter()
        model = als.fit(train)
        fit_seconds = time.perf_counter() - t0
        rows = model.transform(test_df).select("rating", "prediction").collect()
        filled = sum(math.isnan(r["prediction"]) for r in rows)
        pairs = [(r["rating"], mean if math.isnan(r["prediction"]) else r["prediction"])
                 for r in rows]
        rmse, mae = _errors(pairs)
        records.append({"fold": name, "rmse": rmse, "mae": mae, "fit_seconds": fit_seconds,
                        "epochs": als.getMaxIter(), "n_train": n_train, "n_test": n_test,
                        "n_test_cold_start_filled": filled, "train_mean": mean})
        progress(f"spark ALS {name}: RMSE {rmse:.4f}, fit {fit_seconds:.2f} s, "
                 f"{filled} cold-start predictions filled with the mean")
        train.unpersist()
        test_df.unpersist()
    java = spark.sparkContext._jvm.System.getProperty("java.version")
    spark.stop()
    return {"method": "spark_als", "folds": records, "startup_seconds": startup_seconds,
            "java": java,
            "settings": {"rank": rank, "maxIter": 10, "regParam": 0.1, "master": master,
                         "coldStartStrategy": "nan, filled with the train mean", "seed": seed,
                         "spark.sql.shuffle.partitions": 4, "spark.driver.memory": "2g"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", choices=["surprise", "spark"])
    parser.add_argument("--fold", nargs=3, action="append", required=True,
                        metavar=("NAME", "BASE", "TEST"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=50, help="Spark ALS rank")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    args = parser.parse_args()
    if args.method == "surprise":
        result = surprise_svd(args.fold, args.seed)
    else:
        result = spark_als(args.fold, args.seed, args.rank, args.master)
    result["versions"] = versions("scikit-surprise", "pyspark", "numpy", "scipy")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
