"""The warehouse's catalog of model runs, for people: listing runs and their curves."""

from __future__ import annotations

import json
from typing import Any

#: The stages in the order a run goes through them (how ``stages`` lists them).
PIPELINE = ("extract", "validate", "build", "train", "publish")


def list_runs(warehouse: Any, *, schema: str = "factorflow", limit: int = 200) -> list[dict[str, Any]]:
    """Kept model runs, newest first (published models and sweep candidates).

    Returns:
        One dict per run: model_id, created_at, dag_run_id, rank, loss,
        optimizer, epochs_run, valid_rmse, baseline_valid_rmse, fit_seconds,
        candidate_of, is_current, and ``stages``: stage -> ``{"seconds",
        "peak_rss_mb"}`` (see :func:`stages`). Empty when nothing is published yet.
    """
    from factorflow.warehouse import open_warehouse

    try:
        columns, rows = open_warehouse(warehouse).run_query(
            "latest_result.sql", "model_runs", schema=schema, params={"limit": int(limit)})
    except LookupError:
        return []
    runs = [dict(zip(columns, row)) for row in rows]
    for run in runs:
        run["stages"] = stages(run.pop("timings"), run.pop("peak_rss_mb"))
    return runs


def stages(timings: str | None, peak_rss_mb: str | None) -> dict[str, dict[str, Any]]:
    """Stage -> ``{"seconds", "peak_rss_mb"}`` from a run's two JSON columns (as text).

    A run published before peak memory was recorded has ``peak_rss_mb`` None.
    """
    seconds = (json.loads(timings) if timings else None) or {}
    peaks = (json.loads(peak_rss_mb) if peak_rss_mb else None) or {}
    order = {stage: k for k, stage in enumerate(PIPELINE)}
    return {stage: {"seconds": seconds.get(stage), "peak_rss_mb": peaks.get(stage)}
            for stage in sorted({*seconds, *peaks}, key=lambda s: (order.get(s, len(order)), s))}


def run_curve(warehouse: Any, model_id: str, *, schema: str = "factorflow") -> bytes:
    """PNG of one run's training loss and validation RMSE, drawn from ``model_runs.history``.

    Raises:
        LookupError: no such run, or it has no history.
    """
    from factorflow.stages.curves import render_curve
    from factorflow.warehouse import open_warehouse

    _, rows = open_warehouse(warehouse).run_query("latest_result.sql", "run_history",
                                                  schema=schema, params={"model_id": model_id})
    history = json.loads(rows[0][0]) if rows and rows[0][0] else []
    if not history:
        raise LookupError(f"no run {model_id!r} with a history in schema {schema}")
    return render_curve(history, title=model_id)
