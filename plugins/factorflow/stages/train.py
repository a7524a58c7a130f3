"""Train stage: matrix artifacts in; model, metrics and top-N lists out.

Everything that needs JAX happens here (on the GPU worker in production), so
the publish stage only moves finished arrays into the warehouse. Everything
after the fit scores in chunks (:mod:`factorflow.engine.memory`): the stage needs the
ratings, the model and a fixed working set, never ratings x factor width or
users x items. A step that runs out of memory anyway raises
:class:`factorflow.engine.memory.OutOfMemoryError`, naming the step and what to change.

Each artifact is written to a temporary file and renamed into place,
``metrics.json`` last, so the publish task never reads a killed try's half file.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

MODEL_FILE = "model.npz"
METRICS_FILE = "metrics.json"
RECOMMENDATIONS_FILE = "recommendations.npz"
#: In an exported published model (:mod:`factorflow.stages.current_model`): its model_runs fields.
MODEL_INFO_FILE = "model.json"

log = logging.getLogger(__name__)


def rating_scale(summary: dict[str, Any], rating_min: float | None = None,
                 rating_max: float | None = None) -> tuple[float, float]:
    """``(min, max)`` of the scale published scores are clipped to.

    Args:
        summary: the build stage's summary (``rating_min``/``rating_max`` of
            the observed ratings): the default of each bound.
        rating_min, rating_max: the run's scale (e.g. the trigger's params);
            None takes the observed bound.

    Raises:
        ValueError: a bound is not a finite number, or min > max.
    """
    lo = float(summary["rating_min"] if rating_min is None else rating_min)
    hi = float(summary["rating_max"] if rating_max is None else rating_max)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"rating scale [{lo}, {hi}] must be finite with rating_min <= "
                         "rating_max (the train task's rating_min / rating_max)")
    return lo, hi


class _Steps:
    """Wall seconds of each step of the stage, each step guarded for memory."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str, doing: str) -> Iterator[None]:
        from factorflow.engine.memory import memory_guard

        started = time.perf_counter()
        with memory_guard(doing):
            yield
        self.seconds[name] = time.perf_counter() - started


def _split_metrics(model: Any, data: Any, log_fn: Callable[[str], None]) -> dict[str, Any]:
    """Train/valid RMSE, MAE and counts of ``model``, and the bias-only baseline's on valid.

    Each split is scored a chunk of ratings at a time, with a progress line at
    least every 10 s on a long one.
    """
    from functools import partial

    from factorflow.engine.metrics import chunked_metrics, fit_baseline, predict_baseline
    from factorflow.engine.memory import ratings_per_chunk
    from factorflow.stages.progress import Progress

    chunk = ratings_per_chunk(model.rank)
    metrics: dict[str, Any] = {}
    for name, split in (("train", data.train), ("valid", data.valid)):
        if len(split):
            progress = Progress(f"train: scoring the {name} split, ratings", len(split), log_fn)
            scored = chunked_metrics(model.predict, split, chunk_size=chunk,
                                     progress=progress.update)
            metrics.update({f"{name}_{key}": value for key, value in scored.items()})
    if len(data.valid):
        baseline = fit_baseline(data.train, n_users=model.n_users, n_items=model.n_items)
        base = chunked_metrics(partial(predict_baseline, baseline), data.valid, chunk_size=chunk)
        metrics["baseline_valid_rmse"], metrics["baseline_valid_mae"] = base["rmse"], base["mae"]
    return metrics


def _fit_metrics(result: Any, train_config: Any, width: int) -> dict[str, Any]:
    return {
        "rank": train_config.rank,
        "width": width,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "fit_seconds": result.seconds,
        "ratings_per_second": float(np.median([h["ratings_per_s"] for h in result.history])),
        "config": train_config._asdict(),
    }


def train_factors(
    matrix_dir: str | Path,
    out_dir: str | Path,
    *,
    top_n: int = 10,
    rating_min: float | None = None,
    rating_max: float | None = None,
    log_fn: Callable[[str], None] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Fit a biased factor model on the build stage's output and score it.

    Args:
        matrix_dir: output of :func:`factorflow.stages.build.build_matrices`.
        out_dir: directory for ``model.npz``, ``metrics.json``,
            ``recommendations.npz`` (top-N unseen items per user, as indices,
            scores clipped to the rating scale), ``history.json`` and
            ``curves.png`` (train and validation RMSE by epoch, on one axis).
        top_n: length of each user's recommendation list.
        rating_min, rating_max: the rating scale the published scores are
            clipped to, after ranking (default: the observed training range,
            see :func:`rating_scale`); recorded in ``metrics.json``.
        log_fn: where progress lines go (default: this module's logger).
        **config: fields of :class:`factorflow.engine.TrainConfig` (rank,
            epochs, learning_rate, reg, seed, ...); ``None`` values mean default.

    Returns:
        JSON-safe summary: artifact paths and the headline metrics.

    Raises:
        factorflow.engine.memory.OutOfMemoryError: a step ran out of memory (which
            one, and what to change, in the message).
        factorflow.engine.artifacts.ArtifactError: a build artifact is truncated or
            garbage (the message names it and says to clear ``build``).
        factorflow.engine.artifacts.DiskFullError: the disk filled while writing
            an artifact (named, with the space that was free); nothing half-written is left.
    """
    from factorflow.engine import FactorModel
    from factorflow.engine.artifacts import disk_space
    from factorflow.stages.curves import save_history

    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    started, step, log_fn = time.perf_counter(), _Steps(), log_fn or log.info
    data, scale, train_config = _load(matrix_dir, config, rating_min, rating_max, step, log_fn)
    n_users, n_items = data.summary["n_users"], data.summary["n_items"]

    init, warm_from = None, None
    if train_config.init_from:
        with step("warm", "matching the previous model's rows"):
            init, warm_from = _warm_start(train_config, data, log_fn)
    with step("fit", f"fitting the model (rank {train_config.rank}, {train_config.optimizer})"):
        model = FactorModel.fit(data.train, n_users=n_users, n_items=n_items,
                                valid=data.valid if len(data.valid) else None,
                                config=train_config, log=log_fn, init=init)
    result = model.fit_result
    metrics = {**_fit_metrics(result, train_config, model.rank), "history": result.history,
               "rating_min": scale[0], "rating_max": scale[1], "warm_start_from": warm_from}
    with step("score", f"scoring the splits (a width-{model.rank} model)"):
        metrics.update(_split_metrics(model, data, log_fn))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with step("save", "saving the model"):
        model.save(out / MODEL_FILE)
    with step("recommend", f"computing the top-{top_n} lists of {n_users} users"):
        _save_recommendations(model, data, out, top_n=top_n, scale=scale, log_fn=log_fn)
    # curves.py writes its two small files in place: a full disk still names the
    # directory, and metrics.json (the mark of a complete directory) is not written
    with step("curves", "drawing the curves"), disk_space(out):
        curves = save_history(result.history, out, title=f"rank {train_config.rank} "
                              f"{train_config.optimizer}, {train_config.loss} loss")
    metrics["step_seconds"] = step.seconds
    metrics["seconds"] = time.perf_counter() - started
    return _finish(out, metrics, curves, log_fn)


def _warm_start(train_config: Any, data: Any,
                log_fn: Callable[[str], None]) -> tuple[Any, str | None]:
    """``(WarmStart or None, the previous model's id or None)`` for ``train_config.init_from``.

    ``init_from`` is a model directory with id maps: the ``previous_model``
    task's export of the published model, or ``factorflow fit --out``'s. Rows
    are matched by id; anything that makes the previous model unusable gives a
    cold start and one log line saying why (:func:`factorflow.engine.warm.warm_start`).
    """
    from factorflow.engine.warm import warm_start
    from factorflow.engine.warm_files import read_previous

    if not train_config.init_from:
        return None, None
    folder = Path(train_config.init_from)
    try:  # a start that cannot be read is not a failure: a cold start, saying why
        previous = read_previous(folder)
        source = (read_model_info(folder)["model_id"] if (folder / MODEL_INFO_FILE).is_file()
                  else str(folder))
        if previous.user_ids is None:  # rows matched by index would be a guess here
            raise ValueError("no id maps beside the model")
    except (OSError, ValueError) as exc:
        log_fn(f"warm start from {folder} not possible: {exc}; cold start")
        return None, None
    init = warm_start(previous.model, previous.user_ids, previous.item_ids,
                      data.user_ids.to_numpy(), data.item_ids.to_numpy(), train_config, log_fn,
                      source=source)
    return init, (source if init is not None else None)


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of an exported published model (its ``model_runs`` fields)."""
    from factorflow.engine.artifacts import reading

    path = Path(model_dir) / MODEL_INFO_FILE
    with reading(path, task="previous_model"):
        return json.loads(path.read_text())


def _load(matrix_dir: str | Path, config: dict[str, Any], rating_min: float | None,
          rating_max: float | None, step: _Steps, log_fn: Callable[[str], None]):
    """The build's artifacts, the rating scale and the ``TrainConfig``, with JAX started meanwhile."""
    import jax

    from factorflow.engine import TrainConfig
    from factorflow.engine.runtime.cache import enable_compilation_cache, start_runtime
    from factorflow.stages.build import load_matrices

    cache = enable_compilation_cache()
    runtime = start_runtime()  # while the matrices load
    with step("load", "loading the matrices"):
        data = load_matrices(matrix_dir)
    scale = rating_scale(data.summary, rating_min, rating_max)
    train_config = TrainConfig(**{k: v for k, v in config.items() if v is not None})
    runtime.result()  # one clear error if JAX's backend cannot start
    log_fn(f"training on {len(data.train)} ratings ({data.summary['n_users']} users x "
           f"{data.summary['n_items']} items), validating on {len(data.valid)}; config "
           f"{train_config._asdict()}; JAX {jax.default_backend()} backend, "
           f"compilation cache {cache or 'off'}")
    return data, scale, train_config


def _finish(out: Path, metrics: dict[str, Any], curves: dict[str, str],
            log_fn: Callable[[str], None]) -> dict[str, Any]:
    """Write ``metrics.json``, log the closing line; the stage's JSON-safe summary."""
    from factorflow.engine.artifacts import replacing

    # the long per-epoch history last, for a person reading the file
    ordered = {k: v for k, v in metrics.items() if k != "history"} | {
        "history": metrics["history"]}
    with replacing(out / METRICS_FILE) as tmp:  # last: the model directory is complete
        tmp.write_text(json.dumps(ordered, indent=2, default=float))
    log_fn(
        f"validation RMSE {metrics.get('valid_rmse', float('nan')):.4f} "
        f"(bias-only baseline {metrics.get('baseline_valid_rmse', float('nan')):.4f}); "
        f"{metrics['width']} factor columns; artifacts in {out}; per-epoch history "
        f"{curves['history']}, curve {curves['curves']}"
    )
    headline = ("rank", "width", "epochs_run", "best_epoch", "fit_seconds", "ratings_per_second",
                "train_rmse", "valid_rmse", "valid_mae", "baseline_valid_rmse", "seconds")
    return {"model_dir": str(out), "curves": curves["curves"],
            **{k: metrics[k] for k in headline if k in metrics}}


def _save_recommendations(model: Any, data: Any, out: Path, *, top_n: int,
                          scale: tuple[float, float], log_fn: Callable[[str], None]) -> None:
    """Every user's ``top_n`` unseen items, ranked by score, scores clipped to ``scale``."""
    from factorflow.engine.triplets import Triplets
    from factorflow.engine.artifacts import save_npz
    from factorflow.stages.progress import Progress

    progress = Progress("train: top-N lists, users", model.n_users, log_fn)
    items, scores = model.recommend(np.arange(model.n_users, dtype=np.int32),
                                    N=min(top_n, model.n_items),
                                    seen=Triplets.concat(data.train, data.valid),
                                    filter_already_liked=True, clip=scale,
                                    progress=progress.update)
    save_npz(out / RECOMMENDATIONS_FILE, items=items, scores=scores)
