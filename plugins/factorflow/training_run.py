"""Train stage: matrix artifacts in; model, metrics and top-N lists out.

Everything that needs JAX happens here (on the GPU worker in production), so
the publish stage only moves finished arrays into the warehouse.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"
RECOMMENDATIONS_FILE = "recommendations.npz"

log = logging.getLogger(__name__)


def train_factors(
    matrix_dir: str | Path,
    out_dir: str | Path,
    *,
    top_n: int = 10,
    log_fn: Callable[[str], None] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Fit a biased factor model on the build stage's output and score it.

    Args:
        matrix_dir: output of :func:`factorflow.matrix.build_matrices`.
        out_dir: directory for ``model.npz``, ``metrics.json``,
            ``recommendations.npz`` (top-N unseen items per user, as indices),
            ``history.json`` and ``curves.png`` (train and validation RMSE by
            epoch, on one axis).
        top_n: length of each user's recommendation list.
        log_fn: where per-epoch progress lines go (default: this module's logger).
        **config: fields of :class:`factorflow.training.TrainConfig` (rank,
            epochs, learning_rate, reg, seed, ...); ``None`` values mean default.

    Returns:
        JSON-safe summary: artifact paths and the headline metrics.
    """
    from factorflow.compilation import enable_compilation_cache, start_runtime
    from factorflow.curves import save_history
    from factorflow.evaluation import fit_baseline, predict_baseline, regression_metrics
    from factorflow.matrix import Triplets, load_matrices
    from factorflow.model import FactorModel
    from factorflow.training import TrainConfig

    import jax

    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    cache = enable_compilation_cache()
    runtime = start_runtime()  # while the matrices load
    started = time.perf_counter()
    data = load_matrices(matrix_dir)
    n_users, n_items = data.summary["n_users"], data.summary["n_items"]
    train_config = TrainConfig(**{k: v for k, v in config.items() if v is not None})
    valid = data.valid if len(data.valid) else None
    runtime.result()  # one clear error if JAX's backend cannot start
    log_fn = log_fn or log.info
    log_fn(f"training on {len(data.train)} ratings ({n_users} users x {n_items} items), "
           f"validating on {len(data.valid)}; config {train_config._asdict()}; "
           f"JAX {jax.default_backend()} backend, compilation cache {cache or 'off'}")

    model = FactorModel.fit(data.train, n_users=n_users, n_items=n_items, valid=valid,
                            config=train_config, log=log_fn)
    result = model.fit_result
    metrics: dict[str, Any] = {
        "rank": train_config.rank,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "fit_seconds": result.seconds,
        "ratings_per_second": float(np.median([h["ratings_per_s"] for h in result.history])),
        "config": train_config._asdict(),
    }
    splits = {"train": data.train, "valid": data.valid}
    baseline = fit_baseline(data.train, n_users=n_users, n_items=n_items)
    for name, split in splits.items():
        if len(split):
            for key, value in regression_metrics(model.predict(split.users, split.items),
                                                 split.ratings).items():
                metrics[f"{name}_{key}"] = value
    if len(data.valid):
        base = regression_metrics(predict_baseline(baseline, data.valid.users, data.valid.items),
                                  data.valid.ratings)
        metrics["baseline_valid_rmse"], metrics["baseline_valid_mae"] = base["rmse"], base["mae"]
    metrics["history"] = result.history

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    seen = Triplets.concat(data.train, data.valid)
    rec_started = time.perf_counter()
    items, scores = model.recommend(np.arange(n_users, dtype=np.int32), N=min(top_n, n_items),
                                    seen=seen, filter_already_liked=True)
    metrics["recommend_seconds"] = time.perf_counter() - rec_started
    np.savez(out / RECOMMENDATIONS_FILE, items=np.asarray(items), scores=np.asarray(scores))
    curves = save_history(result.history, out, title=f"rank {train_config.rank} "
                          f"{train_config.optimizer}, {train_config.loss} loss")
    metrics["seconds"] = time.perf_counter() - started
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=float))
    log_fn(
        f"validation RMSE {metrics.get('valid_rmse', float('nan')):.4f} "
        f"(bias-only baseline {metrics.get('baseline_valid_rmse', float('nan')):.4f}); "
        f"artifacts in {out}; per-epoch history {curves['history']}, curve {curves['curves']}"
    )
    headline = ("rank", "epochs_run", "best_epoch", "fit_seconds", "ratings_per_second",
                "train_rmse", "valid_rmse", "valid_mae", "baseline_valid_rmse", "seconds")
    return {"model_dir": str(out), "curves": curves["curves"],
            **{k: metrics[k] for k in headline if k in metrics}}
