"""``factorflow fit``: rating files in, a trained model and test metrics out.

The id maps come from the training file only: a test rating whose user or item
never appears in training is still scored (from the global mean and whatever
biases are known) rather than dropped, so the reported RMSE covers the whole
test file, as a deployed model would face it.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from factorflow.cli.readers import read_ratings

MODEL_FILE = "model.npz"
USERS_FILE = "users.parquet"
ITEMS_FILE = "items.parquet"
METRICS_FILE = "metrics.json"
UNKNOWN = -1  # index of an id absent from the training file


def resolve_loss(spec: str) -> Callable:
    """``losses.resolve_loss`` with the current directory searched last for a
    ``module:function`` loss, so a loss in a file next to the data works from
    the console script too.

    Raises:
        ValueError: unknown name, unimportable module, or not a usable loss.
    """
    from factorflow.engine import losses

    if ":" in spec and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    return losses.resolve_loss(spec)


def _engine_settings(config: dict[str, Any], patience: int | None):
    """``(TrainConfig, extra keyword arguments of fit.fit)`` from flat settings.

    Keys go to ``TrainConfig`` when it has such a field, else to ``fit.fit``
    when it takes such a keyword; so fields the engine gains later (restarts,
    ...) need no change here. ``None`` means "engine default".
    """
    from factorflow.engine.gradient import fit

    settings = {k: v for k, v in config.items() if v is not None}
    if patience is not None:
        settings["patience"] = patience
    fit_params = set(inspect.signature(fit.fit).parameters) - {
        "train", "valid", "n_users", "n_items", "config", "log", "on_epoch"}
    if "loss" in settings:
        # Fail before reading any data; TrainConfig keeps the (JSON-safe) spec
        # string and the engine resolves it again, to the same function.
        resolve_loss(settings["loss"])
    fields = {k: v for k, v in settings.items() if k in fit.TrainConfig._fields}
    kwargs = {k: v for k, v in settings.items() if k not in fields and k in fit_params}
    unknown = sorted(set(settings) - set(fields) - set(kwargs))
    if unknown:
        raise ValueError(
            f"unknown training setting(s) {unknown}; this engine accepts "
            f"{sorted(fit.TrainConfig._fields)} and {sorted(fit_params)}"
        )
    return fit.TrainConfig(**fields), kwargs


def _id_map(ids, name: str):
    """Sorted distinct ids with their ``<name>_index`` (a Polars frame)."""
    import polars as pl

    # Int32 indices, the same as matrix.build_matrices writes.
    frame = ids.unique().sort().to_frame(f"{name}_id").with_row_index(f"{name}_index")
    return frame.with_columns(pl.col(f"{name}_index").cast(pl.Int32))


def _to_index(ids, id_map, name: str) -> np.ndarray:
    """``[n]`` int32 indices of ``ids`` in ``id_map``; :data:`UNKNOWN` where absent."""
    import polars as pl

    known = id_map[f"{name}_id"]
    # A test file may spell ids differently (strings vs ints): uncastable ids
    # are simply unknown, never an error.
    ids = ids.cast(known.dtype, strict=False)
    return ids.replace_strict(known, id_map[f"{name}_index"], default=UNKNOWN,
                              return_dtype=pl.Int32).fill_null(UNKNOWN).to_numpy()


def predict_open(params, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Predictions ``[n]`` where user or item indices may be :data:`UNKNOWN`.

    An unknown side contributes neither bias nor factors: a known item with an
    unknown user is ``mean + b_i``, both unknown is ``mean``. NumPy on the host
    (the per-epoch test RMSE calls this with every epoch's model, whose width
    may change from one epoch to the next: JAX would compile each new width).
    """
    users, items = np.asarray(users, np.int32), np.asarray(items, np.int32)
    ku, ki = users != UNKNOWN, items != UNKNOWN
    u, i = np.where(ku, users, 0), np.where(ki, items, 0)
    uf, itf = (np.asarray(f, np.float32) for f in (params.user_factors, params.item_factors))
    bu = np.asarray(params.user_bias, np.float64)[u]
    bi = np.asarray(params.item_bias, np.float64)[i]
    mean = float(np.asarray(params.mean))
    full = mean + bu + bi + np.einsum("nk,nk->n", uf[u], itf[i]).astype(np.float64)
    return np.where(ku & ki, full, mean + np.where(ku, bu, 0.0) + np.where(ki, bi, 0.0))


def json_safe(value: Any) -> Any:
    """``value`` with NumPy scalars made Python, tuples listed, nan/inf as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # paths, callables: their readable form


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
        **config: ``TrainConfig`` fields (rank, epochs, learning_rate, reg,
            seed, optimizer, ...) or ``fit.fit`` keywords (``loss`` as a
            name or ``"module:function"``); None values mean default.

    Returns:
        A JSON-safe dict: counts, ``rmse``/``mae``/``baseline_rmse`` on the test
        file (when given), ``fit_seconds`` (wall, compilation included),
        ``epochs_run``, ``best_epoch``, ``ratings_per_second`` (median epoch)
        and ``history`` (per epoch: ``epoch``, ``seconds`` since the fit
        started, ``train_loss``, ``train_rmse``, ``valid_rmse``, ``test_rmse``).

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: malformed file, bad or unknown settings, diverged fit.
    """
    from factorflow.engine.gradient import fit
    from factorflow.engine.runtime.cache import enable_compilation_cache, start_runtime
    from factorflow.engine.metrics import fit_baseline, mae, rmse
    from factorflow.engine.split import MIN_USER_RATINGS, split_mask
    from factorflow.engine.triplets import Triplets
    from factorflow.engine.model import FactorModel

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

    train_df = read_ratings(train_path, format=format)
    test_df = None if test_path is None else read_ratings(test_path, format=format)
    users, items = _id_map(train_df["user_id"], "user"), _id_map(train_df["item_id"], "item")
    n_users, n_items = users.height, items.height
    u = _to_index(train_df["user_id"], users, "user")
    i = _to_index(train_df["item_id"], items, "item")
    r = train_df["rating"].to_numpy().astype(np.float32)
    is_valid = np.zeros(r.shape[0], bool)
    if valid_fraction > 0:
        is_valid = split_mask(u, n_users, valid_fraction, MIN_USER_RATINGS,
                               train_config.seed)
    train = Triplets(u[~is_valid], i[~is_valid], r[~is_valid])
    valid = Triplets(u[is_valid], i[is_valid], r[is_valid]) if is_valid.any() else None
    test = None
    if test_df is not None:
        test = Triplets(_to_index(test_df["user_id"], users, "user"),
                        _to_index(test_df["item_id"], items, "item"),
                        test_df["rating"].to_numpy().astype(np.float32))
    read_seconds = time.perf_counter() - started
    log(f"read {len(train):,} train, {0 if valid is None else len(valid):,} validation, "
        f"{0 if test is None else len(test):,} test ratings ({n_users:,} users x "
        f"{n_items:,} items) in {read_seconds:.2f} s; config {train_config._asdict()}")

    # Per-epoch test RMSE needs the epoch's parameters; only an engine callback
    # gives them without letting the test set pick the returned epoch.
    test_by_epoch: dict[int, float] = {}
    if test is not None and "on_epoch" in inspect.signature(fit.fit).parameters:
        def on_epoch(epoch: int, params: Any) -> None:
            test_by_epoch[epoch] = rmse(predict_open(params, test.users, test.items),
                                        test.ratings)
        fit_kwargs["on_epoch"] = on_epoch

    runtime.result()  # one clear error if JAX's backend cannot start
    fit_started = time.perf_counter()
    model = FactorModel.fit(train, n_users=n_users, n_items=n_items, valid=valid,
                            config=train_config, log=log, **fit_kwargs)
    fit_seconds = time.perf_counter() - fit_started
    result = model.fit_result

    history = []
    for entry in result.history:
        row = dict(entry)  # whatever the engine reports (restart, ...), plus test_rmse
        if test is not None:
            row["test_rmse"] = test_by_epoch.get(entry["epoch"])
        history.append(row)
    summary: dict[str, Any] = {
        "train_path": str(train_path), "test_path": None if test_path is None else str(test_path),
        "n_users": n_users, "n_items": n_items, "n_train": len(train),
        "n_valid": 0 if valid is None else len(valid), "n_test": 0 if test is None else len(test),
        "config": train_config._asdict(), "loss": config.get("loss") or "squared",
        "patience": patience, "valid_fraction": valid_fraction, "epochs_run": len(result.history),
        "best_epoch": result.best_epoch, "fit_seconds": fit_seconds,
        "ratings_per_second": float(np.median([h["ratings_per_s"] for h in result.history])),
        "read_seconds": read_seconds,
        "train_rmse": rmse(model.predict(train.users, train.items), train.ratings),
    }
    if valid is not None:
        summary["valid_rmse"] = rmse(model.predict(valid.users, valid.items), valid.ratings)
    if test is not None:
        pred = predict_open(model.params, test.users, test.items)
        base = fit_baseline(train, n_users=n_users, n_items=n_items)
        base_params = fit.FactorParams(base.mean, base.user_bias, base.item_bias,
                                            np.zeros((n_users, 0), np.float32),
                                            np.zeros((n_items, 0), np.float32))
        base_pred = predict_open(base_params, test.users, test.items)
        summary.update(
            rmse=rmse(pred, test.ratings), mae=mae(pred, test.ratings),
            baseline_rmse=rmse(base_pred, test.ratings), baseline_mae=mae(base_pred, test.ratings),
            n_test_unknown_user=int(np.sum(test.users == UNKNOWN)),
            n_test_unknown_item=int(np.sum(test.items == UNKNOWN)),
        )
        # Without the callback, the one test RMSE we can honestly place is that
        # of the returned parameters, i.e. of the best epoch.
        if not test_by_epoch:
            for row in history:
                if row["epoch"] == result.best_epoch:
                    row["test_rmse"] = summary["rmse"]
    summary["history"] = history
    summary["seconds"] = time.perf_counter() - started
    summary["out"] = None if out is None else str(out)
    summary = json_safe(summary)
    if out is not None:
        _save(Path(out), model, users, items, summary)
    return summary


def _save(out: Path, model, users, items, summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    users.write_parquet(out / USERS_FILE)
    items.write_parquet(out / ITEMS_FILE)
    (out / METRICS_FILE).write_text(json.dumps(summary, indent=2, allow_nan=False))
