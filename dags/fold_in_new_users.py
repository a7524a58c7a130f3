"""fold_in_new_users: factors and recommendations, within the hour, for users the model has never seen.

Hourly: when the source table holds users the current model lacks, their
ratings are folded into it (each new user's row is the conditional mean given
every item's factors, from the model's own loss and prior) and published as a
model version derived from the current one (``model_runs.parent_model_id``),
atomically and under the same lock as ``factorize_ratings``' publish. When
there is nobody new, the first task skips the rest after one query.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from factorflow.airflow.assets import PUBLISHED
from factorflow.airflow.model_operators import FoldInOperator, PublishFoldInOperator
from factorflow.airflow.params import data_params, publish_params
from factorflow.airflow.task_groups import extract_task, previous_model_task
from factorflow.paths import default_artifacts_dir

ARTIFACTS = default_artifacts_dir()
DATA = ("warehouse_conn_id", "warehouse", "source_table", "rating_min", "rating_max")

with DAG(
    dag_id="fold_in_new_users",
    description="Fold users who joined since the last full run into the current model",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["factorflow", "recommender", "fold-in"],
    # retry delay: the deployment's [core] default_task_retry_delay (docker-compose: 120 s)
    default_args={"retries": 2, "owner": "factorflow"},
    params={**{k: v for k, v in data_params().items() if k in DATA}, **publish_params()},
    doc_md=__doc__,
) as dag:
    previous = previous_model_task(ARTIFACTS, source_table="{{ params.source_table }}",
                                   skip_without_new_users=True)
    extract = extract_task(ARTIFACTS)
    fold_in = FoldInOperator(
        task_id="fold_in",
        previous_dir=previous.output["model_dir"],
        ratings_path=extract.output["path"],
        artifacts_dir=ARTIFACTS,
        top_n="{{ params.top_n }}",
        rating_min="{{ params.rating_min }}",
        rating_max="{{ params.rating_max }}",
    )
    publish = PublishFoldInOperator(
        task_id="publish",
        outlets=PUBLISHED,
        warehouse="{{ params.warehouse }}",
        warehouse_conn_id="{{ params.warehouse_conn_id }}",
        schema="{{ params.schema }}",
        fold_dir=fold_in.output["fold_dir"],
        previous_dir=previous.output["model_dir"],
        source_table="{{ params.source_table }}",
        run_params="{{ params }}",
        keep="{{ params.keep }}",
    )
    previous >> extract >> fold_in >> publish
