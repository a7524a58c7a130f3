"""``factorflow fit``: rating files in, a trained model and test metrics out.

The id maps come from the training file only: a test rating whose user or item
never appears in training is still scored (from the global mean and whatever
biases are known) rather than dropped, so the reported RMSE covers the whole
test file, as a deployed model would face it.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import polars as pl

from factorflow.cli.fit_output import UNKNOWN, json_safe, predict_open
from factorflow.cli.readers import read_ratings
from factorflow.engine import FactorModel, FactorParams, TrainConfig, Triplets, fit, losses
from factorflow.engine.metrics import fit_baseline, mae, rmse
from factorflow.engine.runtime.cache import enable_compilation_cache, start_runtime
from factorflow.engine.split import MIN_USER_RATINGS, split_mask
from factorflow.engine.warm_files import warm_start_from

MODEL_FILE = "model.npz"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
METRICS_FILE = "metrics.json"


class _Ratings(NamedTuple):
    """The files as index triplets, with the training file's id maps."""

    train: Triplets
    valid: Triplets | None  # held out of the training file, None without valid_fraction
    test: Triplets | None  # indices UNKNOWN where the training file lacks the id
    users: pl.DataFrame  # user_index, user_id
    items: pl.DataFrame  # item_index, item_id


def resolve_loss(spec: str) -> Callable:
    """``losses.resolve_loss`` with the current directory searched last for a
    ``module:function`` loss, so a loss in a file next to the data works from
    the console script too.

    Raises:
        ValueError: unknown name, unimportable module, or not a usable loss.
    """
    if ":" in spec and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return losses.resolve_loss(spec)


def _engine_settings(config: dict[str, Any], patience: int | None):
    """``(TrainConfig, extra keyword arguments of the engine's fit)`` from flat settings.

    Keys go to ``TrainConfig`` when it has such a field, else to :func:`factorflow.engine.fit`
    when it takes such a keyword; so fields the engine gains later need no
    change here. ``None`` means "engine default".
    """
    settings = {k: v for k, v in config.items() if v is not None}
    if "init_from" in settings:
        settings["init_from"] = str(settings["init_from"])  # a Path too; TrainConfig is JSON-safe
    if patience is not None:
        settings["patience"] = patience
    fit_params = set(inspect.signature(fit).parameters) - {
        "train", "valid", "n_users", "n_items", "config", "log", "on_epoch", "init"}
    if "loss" in settings:
        # Fail before reading any data; TrainConfig keeps the (JSON-safe) spec
        # string and the engine resolves it again, to the same function.
        resolve_loss(settings["loss"])
    fields = {k: v for k, v in settings.items() if k in TrainConfig._fields}
    kwargs = {k: v for k, v in settings.items() if k not in fields and k in fit_params}
    unknown = sorted(set(settings) - set(fields) - set(kwargs))
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {unknown}; this engine accepts "
            f"{sorted(TrainConfig._fields)} and {sorted(fit_params)}"
        )
    return TrainConfig(**fields), kwargs


def _id_map(ids, name: str):
    """Sorted distinct ids with their ``<name>_index`` (a Polars frame)."""
    # Int32 indices, the same as matrix.build_matrices writes.
    frame = ids.unique().sort().to_frame(f"{name}_id").with_row_index(f"{name}_index")
    return frame.with_columns(pl.col(f"{name}_index").cast(pl.Int32))


def _to_index(ids, id_map, name: str) -> np.ndarray:
    """``[n]`` int32 indices of ``ids`` in ``id_map``; :data:`UNKNOWN` where absent."""
    known = id_map[f"{name}_id"]
    # A test file may spell ids differently (strings vs ints): uncastable ids
    # are simply unknown, never an error.
    ids = ids.cast(known.dtype, strict=False)
    return ids.replace_strict(known, id_map[f"{name}_index"], default=UNKNOWN,
                              return_dtype=pl.Int32).fill_null(UNKNOWN).to_numpy()


def fit_files(
    train_path: str | Path,
    *,
    test_path: str | Path | None = None,
    format: str = "auto",
    out: str | Path | None = None,
    valid_fraction: float = 0.0,
    patience: int | None = None,
    log: Callable[[str], None] | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Train a biased factor model on a ratings file and score it on another.

    Args:
        train_path: training ratings (any format :func:`read_ratings` reads).
        test_path: optional test ratings; ids unseen in training are scored
            from the global mean and known biases and count in ``n_test``.
        format: format of both files, or ``"auto"`` to detect each.
        out: directory for ``model.npz``, ``users.parquet``, ``items.parquet``
            and ``metrics.json``; None writes nothing.
        valid_fraction: share of each user's training ratings (users with at
            least 5) held out, seeded by ``seed``, for early stopping and
            best-epoch selection. The test file is never used for either.
        patience: stop after this many epochs without a better validation
            RMSE; needs ``valid_fraction > 0``.
        log: called with human-readable progress lines (one per epoch).
        **config: ``TrainConfig`` fields (rank, epochs, ..., ``init_from``: a
            previous ``out`` or its ``model.npz``, see :mod:`factorflow.engine.warm_files`)
            or :func:`factorflow.engine.fit` keywords (``loss`` as a name or
            ``"module:function"``); None values mean default.

    Returns:
        A JSON-safe dict: counts, ``rmse``/``mae``/``baseline_rmse`` on the test
        file (when given), ``fit_seconds`` (wall, compilation included),
        ``epochs_run``, ``best_epoch``, ``ratings_per_second`` (median epoch),
        ``warm_start_from`` (None for a cold fit, a fallback included) and
        ``history`` (per epoch: ``epoch``, ``seconds`` since the fit started,
        ``train_loss``, ``train_rmse``, ``valid_rmse``, ``test_rmse``).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: malformed file, bad or unknown settings, diverged fit.
    """
    enable_compilation_cache()
    runtime = start_runtime()  # while the files are read
    started = time.perf_counter()
    log = log or (lambda line: None)
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if patience is not None and valid_fraction == 0.0:
        raise ValueError("patience needs a validation split (valid_fraction > 0); "
                         "early stopping on the test file would leak it into the model")
    train_config, fit_kwargs = _engine_settings(config, patience)

    data = _read(train_path, test_path, format, valid_fraction, train_config.seed)
    read_seconds = time.perf_counter() - started
    log(f"read {len(data.train):,} train, {_count(data.valid):,} validation, "
        f"{_count(data.test):,} test ratings ({data.users.height:,} users x "
        f"{data.items.height:,} items) in {read_seconds:.2f} s; config {train_config._asdict()}")

    runtime.result()  # one clear error if JAX's backend cannot start
    fit_started = time.perf_counter()
    model, test_by_epoch = _fit(data, train_config, fit_kwargs, log)
    fit_seconds = time.perf_counter() - fit_started

    summary = {
        "train_path": str(train_path), "test_path": None if test_path is None else str(test_path),
        **_fit_summary(model, data, fit_seconds),
        "config": train_config._asdict(), "loss": config.get("loss") or "squared",
        "patience": patience, "valid_fraction": valid_fraction, "read_seconds": read_seconds,
        **({} if data.test is None else _test_metrics(model, data)),
        "history": _history(model.fit_result.history, test_by_epoch, data.test is not None),
        "warm_start_from": model.fit_result.warm_start,
        "seconds": time.perf_counter() - started,
        "out": None if out is None else str(out),
    }
    summary = json_safe(summary)
    if out is not None:
        _save(Path(out), model, data, summary)
    return summary


def _count(triplets: Triplets | None) -> int:
    return 0 if triplets is None else len(triplets)


def _read(train_path: str | Path, test_path: str | Path | None, format: str,
          valid_fraction: float, seed: int) -> _Ratings:
    """Both files as triplets indexed by the training file's ids, the validation split held out."""
    train_df = read_ratings(train_path, format=format)
    test_df = None if test_path is None else read_ratings(test_path, format=format)
    users, items = _id_map(train_df["user_id"], "user"), _id_map(train_df["item_id"], "item")
    u = _to_index(train_df["user_id"], users, "user")
    i = _to_index(train_df["item_id"], items, "item")
    r = train_df["rating"].to_numpy().astype(np.float32)
    is_valid = np.zeros(r.shape[0], bool)
    if valid_fraction > 0:
        is_valid = split_mask(u, users.height, valid_fraction, MIN_USER_RATINGS, seed)
    test = None
    if test_df is not None:
        test = Triplets(_to_index(test_df["user_id"], users, "user"),
                        _to_index(test_df["item_id"], items, "item"),
                        test_df["rating"].to_numpy().astype(np.float32))
    return _Ratings(train=Triplets(u[~is_valid], i[~is_valid], r[~is_valid]),
                    valid=Triplets(u[is_valid], i[is_valid], r[is_valid]) if is_valid.any() else None,
                    test=test, users=users, items=items)


def _fit(data: _Ratings, train_config: TrainConfig, fit_kwargs: dict[str, Any],
         log: Callable[[str], None]) -> tuple[FactorModel, dict[int, float]]:
    """The fitted model and, with a test file, each epoch's test RMSE.

    The engine's per-epoch callback gives each epoch's parameters: the test
    file is scored on them without letting it pick the returned epoch. A warm
    start is resolved here, inside the fit's time.
    """
    if train_config.init_from is not None:
        fit_kwargs = {**fit_kwargs, "init": warm_start_from(
            train_config.init_from, user_ids=data.users["user_id"].to_numpy(),
            item_ids=data.items["item_id"].to_numpy(), config=train_config, log=log)}
    test_by_epoch: dict[int, float] = {}
    if data.test is not None:
        test = data.test

        def on_epoch(epoch: int, params: FactorParams) -> None:
            test_by_epoch[epoch] = rmse(predict_open(params, test.users, test.items),
                                        test.ratings)

        fit_kwargs = {**fit_kwargs, "on_epoch": on_epoch}
    model = FactorModel.fit(data.train, n_users=data.users.height, n_items=data.items.height,
                            valid=data.valid, config=train_config, log=log, **fit_kwargs)
    return model, test_by_epoch


def _fit_summary(model: FactorModel, data: _Ratings, fit_seconds: float) -> dict[str, Any]:
    """Counts, the fit's speed and epochs, and the model's RMSE on train (and validation)."""
    result = model.fit_result
    summary = {
        "n_users": data.users.height, "n_items": data.items.height, "n_train": len(data.train),
        "n_valid": _count(data.valid), "n_test": _count(data.test),
        "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "fit_seconds": fit_seconds,
        "ratings_per_second": float(np.median([h["ratings_per_s"] for h in result.history])),
        "train_rmse": rmse(model.predict(data.train.users, data.train.items), data.train.ratings),
    }
    if data.valid is not None:
        summary["valid_rmse"] = rmse(model.predict(data.valid.users, data.valid.items),
                                     data.valid.ratings)
    return summary


def _test_metrics(model: FactorModel, data: _Ratings) -> dict[str, Any]:
    """The model's and the bias-only baseline's RMSE and MAE on the test file, unseen ids counted."""
    test, n_users, n_items = data.test, data.users.height, data.items.height
    pred = predict_open(model.params, test.users, test.items)
    base = fit_baseline(data.train, n_users=n_users, n_items=n_items)
    base_params = FactorParams(base.mean, base.user_bias, base.item_bias,
                               np.zeros((n_users, 0), np.float32),
                               np.zeros((n_items, 0), np.float32))
    base_pred = predict_open(base_params, test.users, test.items)
    return {
        "rmse": rmse(pred, test.ratings), "mae": mae(pred, test.ratings),
        "baseline_rmse": rmse(base_pred, test.ratings), "baseline_mae": mae(base_pred, test.ratings),
        "n_test_unknown_user": int(np.sum(test.users == UNKNOWN)),
        "n_test_unknown_item": int(np.sum(test.items == UNKNOWN)),
    }


def _history(history: list[dict[str, Any]], test_by_epoch: dict[int, float],
             with_test: bool) -> list[dict[str, Any]]:
    """The engine's per-epoch rows (whatever it reports), each with its ``test_rmse`` added."""
    if not with_test:
        return [dict(row) for row in history]
    return [{**row, "test_rmse": test_by_epoch.get(row["epoch"])} for row in history]


def _save(out: Path, model: FactorModel, data: _Ratings, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    data.users.write_parquet(out / USERS_FILE)
    data.items.write_parquet(out / ITEMS_FILE)
    (out / METRICS_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False))
