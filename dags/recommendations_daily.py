"""recommendations_daily: rebuild a daily recommendations table whenever a model is published.

Scheduled on the ``factorflow.current_predictions`` asset, which the publish
task of ``factorize_ratings`` updates; the warehouse and schema come from the
triggering asset event (or from the params on a manual run).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

from factorflow.airflow.assets import CURRENT_PREDICTIONS
from factorflow.airflow.params import downstream_params

with DAG(
    dag_id="recommendations_daily",
    description="Materialize factorflow.recommendations_daily from the current model",
    schedule=[CURRENT_PREDICTIONS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["factorflow", "downstream"],
    default_args={"retries": 2, "owner": "factorflow"},
    params=downstream_params(),
    doc_md=__doc__,
) as dag:

    @task
    def materialize(params=None, triggering_asset_events=None) -> dict:
        """Rebuild the table with the SQL in include/sql/ (per back end).

        A DuckDB path must lie under FACTORFLOW_DATA_ROOTS (resolve_warehouse
        checks it, failing without retries), whether a person typed it or a
        publish recorded it.
        """
        from factorflow.airflow.operators import resolve_warehouse
        from factorflow.warehouse import open_warehouse

        warehouse, schema = params["warehouse"], params["schema"]
        conn_id = params["warehouse_conn_id"]
        for events in (triggering_asset_events or {}).values():
            for event in events:  # the newest publish wins
                warehouse = event.extra.get("warehouse", warehouse)
                conn_id = event.extra.get("warehouse_conn_id", conn_id)
                schema = event.extra.get("schema", schema)
        return open_warehouse(resolve_warehouse(warehouse, conn_id)).materialize_recommendations(
            schema=schema)

    materialize()
