"""MovieLens 100K, official folds u1..u5: factorflow (its CLI, defaults) vs Surprise SVD vs Spark ALS.

Accuracy (test RMSE/MAE per fold and their means), fit time, and
factorflow's time to equal each peer's RMSE: on each fold, the first epoch of
factorflow's history whose test RMSE is at most the peer's, its ``seconds``
(since the engine's fit started, loading the compiled programs included) over
the peer's fit seconds. An untimed 3-sweep fit on the first fold runs first
(:func:`warm_up`), so every timed fold finds the programs in the cache, as
every run after a machine's first does; its own time is reported (on a cold
cache it includes compiling).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from tests.bench.common import BENCH_DIR, ROOT, progress, run_json

#: Where the tests find shared data too (tests/conftest.py).
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "ml-100k"
METHODS = ("factorflow", "surprise_svd", "spark_als")
LABELS = {"factorflow": "factorflow (defaults)", "surprise_svd": "Surprise SVD (defaults)",
          "spark_als": "Spark ALS rank 50"}


def find_folds(data_dir: Path, n_folds: int) -> list[tuple[str, str, str]] | None:
    """``[(name, base path, test path)]`` of the first ``n_folds`` folds; None if any is missing."""
    folds = [(f"u{k}", str(data_dir / f"u{k}.base"), str(data_dir / f"u{k}.test"))
             for k in range(1, n_folds + 1)]
    if all(Path(p).is_file() for _, base, test in folds for p in (base, test)):
        return folds
    return None


def _factorflow_command() -> list[str]:
    script = Path(sys.executable).parent / "factorflow"
    return [str(script)] if script.exists() else [sys.executable, "-m", "factorflow.cli.main"]


def warm_up(folds: list[tuple[str, str, str]], timeout: float) -> dict[str, Any]:
    """A short untimed fit on the first fold, so that every timed fold meets the
    same program cache (as every run after a machine's first does).

    Returns ``{"fit_seconds", "first_epoch_seconds", "error"}``: on a cold cache
    (a fresh clone, or a changed engine) its seconds include compiling.
    """
    _, base, test = folds[0]
    run = run_json([*_factorflow_command(), "fit", "--train", base, "--test", test,
                    "--epochs", "3", "--json"],
                   log=BENCH_DIR / "logs" / "factorflow-warm-up.log", timeout=timeout)
    out = run["result"] or {}
    history = out.get("history") or [{}]
    record = {"fit_seconds": out.get("fit_seconds"),
              "first_epoch_seconds": history[0].get("seconds"), "error": run["error"]}
    progress("factorflow warm-up: " + (f"fit {record['fit_seconds']:.2f} s (sweep 1 at "
                                       f"{record['first_epoch_seconds']:.2f} s)"
                                       if not run["error"] else f"FAILED: {run['error']}"))
    return record


def run_factorflow(folds: list[tuple[str, str, str]], timeout: float) -> list[dict[str, Any]]:
    """``factorflow fit --train BASE --test TEST --json`` with default settings, per fold."""
    records = []
    for name, base, test in folds:
        run = run_json([*_factorflow_command(), "fit", "--train", base, "--test", test, "--json"],
                       log=BENCH_DIR / "logs" / f"factorflow-{name}.log", timeout=timeout)
        out = run["result"] if run["error"] is None else {}
        record = {"fold": name, "error": run["error"], "peak_rss_bytes": run["peak_rss_bytes"],
                  "wall_seconds": run["wall_seconds"],
                  **{k: out.get(k) for k in ("rmse", "mae", "fit_seconds", "epochs_run", "n_train",
                                             "n_test", "ratings_per_second", "best_epoch",
                                             "baseline_rmse", "n_test_unknown_user",
                                             "n_test_unknown_item", "config", "history")}}
        record["epochs"] = record.pop("epochs_run")
        records.append(record)
        progress(f"factorflow {name}: " + (f"RMSE {record['rmse']:.4f}, fit "
                                           f"{record['fit_seconds']:.2f} s" if not run["error"]
                                           else f"FAILED: {run['error']}"))
    return records


def run_peer(method: str, folds: list[tuple[str, str, str]], peer_python: str,
             timeout: float) -> dict[str, Any]:
    """All folds of one peer in one process of the peers' venv."""
    cmd = [peer_python, "-m", "tests.bench.peers", method]
    for fold in folds:
        cmd += ["--fold", *fold]
    run = run_json(cmd, log=BENCH_DIR / "logs" / f"{method}.log", timeout=timeout)
    if run["error"]:
        progress(f"{method}: FAILED: {run['error']}")
        return {"error": run["error"], "folds": []}
    return {**run["result"], "error": None, "wall_seconds": run["wall_seconds"]}


def time_to_match(history: list[dict] | None, target_rmse: float) -> dict[str, Any] | None:
    """First epoch whose ``test_rmse`` <= ``target_rmse``: ``{"epoch", "seconds"}``, or None."""
    for row in history or []:
        if row.get("test_rmse") is not None and row["test_rmse"] <= target_rmse:
            return {"epoch": row["epoch"], "seconds": row["seconds"], "test_rmse": row["test_rmse"]}
    return None


def speed(ff_folds: list[dict], peer_folds: list[dict]) -> dict[str, Any]:
    """factorflow's time-to-equal-RMSE against one peer, per fold and summarized."""
    peer_by_fold = {r["fold"]: r for r in peer_folds}
    per_fold = []
    for ff in ff_folds:
        peer = peer_by_fold.get(ff["fold"])
        if ff["error"] or peer is None:
            continue
        hit = time_to_match(ff["history"], peer["rmse"])
        has_curve = any(h.get("test_rmse") is not None for h in ff["history"] or [])
        per_fold.append({
            "fold": ff["fold"], "peer_rmse": peer["rmse"], "peer_fit_seconds": peer["fit_seconds"],
            "has_per_epoch_test_rmse": has_curve, "reached": hit is not None,
            "best_test_rmse": min((h["test_rmse"] for h in ff["history"] or []
                                   if h.get("test_rmse") is not None), default=None),
            **({"epoch": hit["epoch"], "seconds": hit["seconds"],
                "ratio": hit["seconds"] / peer["fit_seconds"]} if hit else {}),
        })
    ratios = [f["ratio"] for f in per_fold if f["reached"]]
    best = [f["best_test_rmse"] for f in per_fold if f["best_test_rmse"] is not None]
    return {"folds": per_fold, "n_folds": len(per_fold), "n_reached": len(ratios),
            "mean_best_test_rmse": statistics.fmean(best) if best else None,
            "mean_peer_rmse": statistics.fmean(f["peer_rmse"] for f in per_fold)
            if per_fold else None,
            "mean_ratio": statistics.fmean(ratios) if ratios else None,
            "mean_seconds": statistics.fmean(f["seconds"] for f in per_fold if f["reached"])
            if ratios else None}


def summarize(folds: list[dict]) -> dict[str, Any] | None:
    """Means over the folds that ran: RMSE, MAE, fit seconds, ratings/s (n_train * epochs / fit s)."""
    ok = [f for f in folds if not f.get("error") and f.get("rmse") is not None]
    if not ok:
        return None
    return {
        "n_folds": len(ok), "rmse": statistics.fmean(f["rmse"] for f in ok),
        "mae": statistics.fmean(f["mae"] for f in ok),
        "fit_seconds": statistics.fmean(f["fit_seconds"] for f in ok),
        "median_fit_seconds": statistics.median(f["fit_seconds"] for f in ok),
        "ratings_per_second": statistics.fmean(f["n_train"] * f["epochs"] / f["fit_seconds"]
                                               for f in ok),
        "epochs": statistics.fmean(f["epochs"] for f in ok),
    }


def run(data_dir: Path, n_folds: int, peer_python: str, *, timeout: float,
        methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """The whole MovieLens stage: per-method fold records, means and speed ratios."""
    folds = find_folds(data_dir, n_folds)
    if folds is None:
        return {"skipped": f"MovieLens 100K folds not found under {data_dir}"}
    methods_out: dict[str, Any] = {}
    if "factorflow" in methods:
        first = warm_up(folds, timeout)
        methods_out["factorflow"] = {"folds": run_factorflow(folds, timeout), "error": None,
                                     "warm_up": first}
    for method, peer in (("surprise_svd", "surprise"), ("spark_als", "spark")):
        if method in methods:
            methods_out[method] = run_peer(peer, folds, peer_python, timeout * len(folds))
    for record in methods_out.values():
        record["summary"] = summarize(record["folds"])
    result: dict[str, Any] = {"data_dir": str(data_dir), "folds": [f[0] for f in folds],
                              "methods": methods_out, "speed": {}}
    if "factorflow" in methods_out:
        for peer in ("surprise_svd", "spark_als"):
            if peer in methods_out:
                result["speed"][peer] = speed(methods_out["factorflow"]["folds"],
                                              methods_out[peer]["folds"])
    return result
