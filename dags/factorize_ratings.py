"""factorize_ratings: warehouse ratings -> validated matrices -> JAX factors -> warehouse.

Wiring only: the work is in ``factorflow`` (pure library) and its thin
operators. Parsing this file imports neither JAX, Polars nor Great Expectations.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG

from factorflow.airflow.assets import PUBLISHED
from factorflow.airflow.operators import PublishFactorsOperator, TrainFactorsOperator
from factorflow.airflow.params import (
    TRAIN_PARAMS,
    data_params,
    publish_params,
    train_params,
    warm_start_params,
)
from factorflow.airflow.task_groups import (
    Ingest,
    ingest,
    previous_model_task,
    publish_kwargs,
    stage_timings,
)
from factorflow.paths import default_artifacts_dir

ARTIFACTS = default_artifacts_dir()
GPU_QUEUE = os.environ.get("FACTORFLOW_GPU_QUEUE", "gpu")

with DAG(
    dag_id="factorize_ratings",
    description="Train latent-factor models from warehouse ratings and publish them back",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["factorflow", "recommender", "jax"],
    # retry delay: the deployment's [core] default_task_retry_delay (docker-compose: 120 s)
    default_args={"retries": 2, "owner": "factorflow"},
    params={**data_params(), **train_params(), **warm_start_params(), **publish_params()},
    doc_md=__doc__,
) as dag:
    extract, validate, build = ingest(ARTIFACTS)
    previous = previous_model_task(ARTIFACTS, enabled="{{ params.warm_start }}")
    train = TrainFactorsOperator(
        task_id="train",
        queue=GPU_QUEUE,
        matrix_dir=build.output["matrix_dir"],
        artifacts_dir=ARTIFACTS,
        train_config={**{name: "{{ params.%s }}" % name for name in TRAIN_PARAMS},
                      "init_from": previous.output["model_dir"]},
        top_n="{{ params.top_n }}",
        rating_min="{{ params.rating_min }}",
        rating_max="{{ params.rating_max }}",
    )
    publish = PublishFactorsOperator(
        task_id="publish",
        outlets=PUBLISHED,
        model_dir=train.output["model_dir"],
        timings=stage_timings(extract=extract, validate=validate, build=build,
                              previous_model=previous, train=train),
        **publish_kwargs(Ingest(extract, validate, build)),
    )
    [build, previous] >> train >> publish
