"""The factorflow page in the Airflow UI: model runs with their metrics and curves.

A FastAPI app the api-server mounts at ``/factorflow`` (see
``plugins/factorflow_plugin.py``). Plugin apps are not behind Airflow's auth by
default, so every route here depends on Airflow's own ``get_user``: a request
needs a valid Airflow JWT (the UI's ``_token`` cookie, or a bearer token), and
gets 401/403 otherwise. The warehouse is ``$FACTORFLOW_WAREHOUSE`` (a DuckDB
file or a ``postgresql://`` URI); the schema ``$FACTORFLOW_UI_SCHEMA`` (default
``factorflow``).
"""

from __future__ import annotations

import html
import logging
import os
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

try:  # the api-server's own authentication dependency
    from airflow.api_fastapi.core_api.security import get_user
except ImportError:  # pragma: no cover - outside an api-server (e.g. a worker image)
    get_user = None

log = logging.getLogger(__name__)

COLUMNS = (("model_id", "model"), ("created_at", "published"), ("rank", "rank"),
           ("optimizer", "optimizer"), ("loss", "loss"), ("epochs_run", "epochs"),
           ("valid_rmse", "valid RMSE"), ("baseline_valid_rmse", "bias-only RMSE"),
           ("fit_seconds", "fit s"), ("warm_start_from", "warm start from"),
           ("parent_model_id", "folded into"), ("stages", "stages: wall s · peak RSS MB"))


def _warehouse() -> tuple[str, str]:
    from factorflow.paths import default_warehouse

    return default_warehouse(), os.environ.get("FACTORFLOW_UI_SCHEMA", "factorflow")


def _runs() -> list[dict[str, Any]]:
    from factorflow.cli.catalog import list_runs

    warehouse, schema = _warehouse()
    try:
        return list_runs(warehouse, schema=schema)
    except Exception as exc:  # a locked file, an unreachable server: say so, briefly
        log.warning("factorflow UI: cannot read model runs from %s schema %s: %s",
                    warehouse if "://" not in warehouse else "the PostgreSQL warehouse", schema, exc)
        raise HTTPException(503, f"warehouse unavailable: {type(exc).__name__}") from exc


def _stages_cell(stages: dict[str, dict[str, Any]]) -> str:
    """One line per stage: ``train 12.3 s · 845 MB`` (no MB for runs recorded before peaks)."""
    lines = []
    for stage, figures in stages.items():
        seconds, peak = figures.get("seconds"), figures.get("peak_rss_mb")
        text = html.escape(stage) + (f" {seconds:.1f} s" if seconds is not None else "")
        lines.append(text + (f" · {peak:,.0f} MB" if peak is not None else ""))
    return "<br>".join(lines)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "stages":
        return _stages_cell(value)
    if isinstance(value, float):
        return f"{value:.4f}" if key.endswith("rmse") else f"{value:.1f}"
    if key == "created_at":
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return html.escape(str(value))


def render_page(runs: list[dict[str, Any]]) -> str:
    """The runs table as a self-contained HTML page (values escaped)."""
    from urllib.parse import quote

    head = "".join(f"<th>{label}</th>" for _, label in COLUMNS) + "<th>curve</th>"
    rows = []
    for run in runs:
        kind = "current" if run.get("is_current") else ("candidate" if run.get("candidate_of") else "")
        cells = "".join(f"<td>{_cell(key, run.get(key))}</td>" for key, _ in COLUMNS)
        link = f"curve.png?model_id={quote(str(run['model_id']), safe='')}"
        rows.append(f'<tr class="{kind}" data-model-id="{html.escape(str(run["model_id"]))}">'
                    f'{cells}<td><a href="{link}" target="_blank">'
                    f'<img src="{link}" alt="curve" height="60" loading="lazy"></a></td></tr>')
    body = "".join(rows) or f'<tr><td colspan="{len(COLUMNS) + 1}">no model published yet</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>factorflow model runs</title>
<style>
 body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #1f2937; }}
 table {{ border-collapse: collapse; font-size: 14px; }}
 th, td {{ border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; }}
 tr.current {{ background: #ecfdf5; font-weight: 600; }}
 tr.candidate {{ color: #6b7280; }}
</style></head><body>
<h1>factorflow model runs</h1>
<p>Newest first; the current model is highlighted, sweep candidates are grey.</p>
<table id="runs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
</body></html>"""


def create_app() -> FastAPI:
    """The plugin's FastAPI app; every route requires an authenticated Airflow user."""
    if get_user is None:
        raise RuntimeError("the factorflow UI needs the Airflow api-server (airflow.api_fastapi)")
    app = FastAPI(title="factorflow", dependencies=[Depends(get_user)])

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return render_page(_runs())

    @app.get("/api/runs")
    def runs() -> list[dict[str, Any]]:
        return [{k: (str(v) if k == "created_at" else v) for k, v in run.items()} for run in _runs()]

    @app.get("/curve.png")
    def curve(model_id: str = Query(..., max_length=500)) -> Response:
        from factorflow.cli.catalog import run_curve

        warehouse, schema = _warehouse()
        try:
            png = run_curve(warehouse, model_id, schema=schema)
        except LookupError as exc:
            raise HTTPException(404, "no such run") from exc
        # Drawn per request from the published history: let the browser keep it a while.
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})

    return app
