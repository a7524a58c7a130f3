"""tune_factorization: train many candidates on one built matrix, publish only the best.

A grid (or a random sample) of candidates; every candidate is recorded in ``model_runs``.

Wiring only. ``train`` is mapped over the candidates (dynamic task mapping,
``expand``) and runs on the GPU queue; ``pick`` chooses the lowest validation
RMSE; ``publish`` writes that model and one ``model_runs`` row per candidate
(``candidate_of`` = the published model) in one transaction.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, task

from factorflow.airflow.assets import PUBLISHED
from factorflow.airflow.operators import PublishFactorsOperator, TrainFactorsOperator
from factorflow.airflow.params import TRAIN_PARAMS, data_params, publish_params, sweep_params, train_params
from factorflow.airflow.task_groups import ingest, publish_kwargs, stage_timings
from factorflow.paths import default_artifacts_dir

ARTIFACTS = default_artifacts_dir()
GPU_QUEUE = os.environ.get("FACTORFLOW_GPU_QUEUE", "gpu")

with DAG(
    dag_id="tune_factorization",
    description="Hyperparameter sweep: train candidates in parallel, publish the best",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=4,
    render_template_as_native_obj=True,
    tags=["factorflow", "recommender", "jax", "sweep"],
    # retry delay: the deployment's [core] default_task_retry_delay (docker-compose: 120 s)
    default_args={"retries": 2, "owner": "factorflow"},
    params={**data_params(), **sweep_params(), **train_params(), **publish_params()},
    doc_md=__doc__,
) as dag:
    stages = ingest(ARTIFACTS)

    @task(task_id="plan")
    def plan(params=None) -> list[dict]:
        """One TrainConfig per candidate: the form's settings, overridden by the space."""
        from factorflow.engine.sweeps import plan_candidates

        base = {name: params[name] for name in TRAIN_PARAMS}
        grid = plan_candidates(params["space"], search=params["search"],
                               samples=params["samples"], seed=params["seed"])
        return [{**base, **candidate} for candidate in grid]

    candidates = plan()
    train = TrainFactorsOperator.partial(
        task_id="train",
        queue=GPU_QUEUE,
        matrix_dir=stages.build.output["matrix_dir"],
        artifacts_dir=ARTIFACTS,
        top_n="{{ params.top_n }}",
        rating_min="{{ params.rating_min }}",
        rating_max="{{ params.rating_max }}",
    ).expand(train_config=candidates)

    @task(task_id="pick")
    def pick(summaries) -> dict:
        """The candidate with the lowest validation RMSE, every candidate's directory, and the
        candidates' summed train seconds and largest peak RSS."""
        from factorflow.engine.sweeps import best_candidate

        summaries = list(summaries)
        best = best_candidate(summaries)
        return {"model_dir": summaries[best]["model_dir"], "best": best,
                "valid_rmse": summaries[best]["valid_rmse"],
                "candidates": [s["model_dir"] for s in summaries],
                "train_seconds": round(sum(s["seconds"] for s in summaries), 3),
                "train_peak_rss_mb": max(s["peak_rss_mb"] for s in summaries)}

    best = pick(train.output)
    publish = PublishFactorsOperator(
        task_id="publish",
        outlets=PUBLISHED,
        model_dir=best["model_dir"],
        candidates=best["candidates"],
        timings={**stage_timings(**stages._asdict()),
                 "train": {"seconds": best["train_seconds"],
                           "peak_rss_mb": best["train_peak_rss_mb"]}},
        **publish_kwargs(stages),
    )
    stages.build >> candidates >> train >> best >> publish
