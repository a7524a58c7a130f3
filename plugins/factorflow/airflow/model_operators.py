"""Operators that start from the published model: read it back, fold new users in, publish that.

``previous_model`` reads the current model out of the warehouse for a warm
start (``factorize_ratings``) or a fold-in (``fold_in_new_users``); ``fold_in``
and ``publish_fold_in`` add new users to it as a derived model version. Like
:mod:`factorflow.airflow.operators`, ``__init__`` only stores and ``execute``
calls one library function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from factorflow.airflow.operators import (
    _StageOperator,
    announce,
    fail_fast,
    model_id_for,
    resolve_warehouse,
    run_dir,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def _enabled(value: Any) -> bool:
    """A rendered boolean param (``True``, ``"True"``, ``"false"``, None)."""
    return str(value).strip().lower() not in ("false", "0", "none", "", "no", "off")


class PreviousModelOperator(_StageOperator):
    """Read the current published model into the run's artifacts (model, id maps).

    Args:
        warehouse: DuckDB file published to, when no connection is given (templated).
        warehouse_conn_id: Airflow connection of the published warehouse (templated).
        schema: the published schema (templated).
        artifacts_dir: root of the run-scoped artifact directories (templated).
        enabled: whether to read it at all (``params.warm_start``); False
            returns an empty ``model_dir`` at once, as does an empty schema (templated).
        source_table: with ``skip_without_new_users``, the source table whose
            users the model may lack (templated).
        skip_without_new_users: skip this task and everything after it when
            there is no model, or every user of ``source_table`` is in it (the
            fold-in DAG's quick exit).
    """

    template_fields: Sequence[str] = ("warehouse", "warehouse_conn_id", "schema", "artifacts_dir",
                                      "enabled", "source_table")
    stage = "previous_model"

    def __init__(self, *, warehouse: str, schema: str, artifacts_dir: str,
                 warehouse_conn_id: str | None = None, enabled: Any = True,
                 source_table: str | None = None, skip_without_new_users: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse
        self.warehouse_conn_id = warehouse_conn_id
        self.schema = schema
        self.artifacts_dir = artifacts_dir
        self.enabled = enabled
        self.source_table = source_table
        self.skip_without_new_users = skip_without_new_users

    def execute(self, context: "Context") -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from factorflow.stages.current_model import count_new_users, export_current_model

        if not _enabled(self.enabled):
            self.log.info("warm start is off for this run: training starts from nothing")
            return self._run(context, lambda: {"model_dir": "", "model_id": "",
                                               "reason": "warm_start is off"})
        target = resolve_warehouse(self.warehouse, self.warehouse_conn_id)
        if self.skip_without_new_users:  # one query first: the usual hourly answer is "nobody"
            model_id, new = fail_fast(lambda: count_new_users(target, self.source_table,
                                                              schema=self.schema))
            if model_id is None:
                raise AirflowSkipException(f"nothing to fold into: no model in schema {self.schema}")
            if new == 0:
                raise AirflowSkipException(f"nobody new: every user of {self.source_table} is "
                                           f"in model {model_id}")
            self.log.info("%d user(s) of %s are not in model %s", new, self.source_table, model_id)

        def export(*args: Any, **kwargs: Any) -> dict[str, Any]:
            found = export_current_model(*args, **kwargs)
            # "" rather than None: Airflow reads a None XCom as a missing one
            return {**found, "model_dir": found["model_dir"] or "",
                    "model_id": found["model_id"] or ""}

        return self._run(context, export, target, run_dir(self.artifacts_dir, context) / "previous",
                         schema=self.schema, log_fn=self.log.info)


class FoldInOperator(_StageOperator):
    """Give the users the model lacks factors and top-N lists (the model held fixed).

    Args:
        previous_dir: output of ``previous_model`` (templated).
        ratings_path: output of ``extract`` (templated).
        artifacts_dir: root of the run-scoped artifact directories (templated).
        top_n, rating_min, rating_max: the lists' length and scale (templated).
    """

    template_fields: Sequence[str] = ("previous_dir", "ratings_path", "artifacts_dir", "top_n",
                                      "rating_min", "rating_max")
    stage = "fold_in"

    def __init__(self, *, previous_dir: Any, ratings_path: Any, artifacts_dir: str,
                 top_n: Any = 10, rating_min: Any = None, rating_max: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.previous_dir = previous_dir
        self.ratings_path = ratings_path
        self.artifacts_dir = artifacts_dir
        self.top_n = top_n
        self.rating_min = rating_min
        self.rating_max = rating_max

    def execute(self, context: "Context") -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from factorflow.airflow.operators import TrainFactorsOperator
        from factorflow.stages.fold_in import fold_in_new_users

        bound = TrainFactorsOperator._bound
        summary = self._run(context, fold_in_new_users, self.previous_dir, self.ratings_path,
                            run_dir(self.artifacts_dir, context) / "fold_in",
                            top_n=int(self.top_n), rating_min=bound(self.rating_min),
                            rating_max=bound(self.rating_max), log_fn=self.log.info)
        if summary["fold_dir"] is None:
            raise AirflowSkipException("nobody new to fold in")
        return summary


class PublishFoldInOperator(_StageOperator):
    """Publish the fold-in as a model version derived from the current one (one transaction).

    Args:
        warehouse, warehouse_conn_id, schema: where (templated).
        fold_dir: output of ``fold_in``; previous_dir: of ``previous_model`` (templated).
        source_table, run_params, keep: recorded / retention, as a full publish (templated).
    """

    template_fields: Sequence[str] = ("warehouse", "warehouse_conn_id", "schema", "fold_dir",
                                      "previous_dir", "source_table", "run_params", "keep")
    stage = "publish"

    def __init__(self, *, warehouse: str, schema: str, fold_dir: Any, previous_dir: Any,
                 source_table: str, warehouse_conn_id: str | None = None, run_params: Any = None,
                 keep: Any = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.warehouse = warehouse
        self.warehouse_conn_id = warehouse_conn_id
        self.schema = schema
        self.fold_dir = fold_dir
        self.previous_dir = previous_dir
        self.source_table = source_table
        self.run_params = run_params
        self.keep = keep

    def execute(self, context: "Context") -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from factorflow.stages.publish_fold_in import publish_folded
        from factorflow.warehouse.base import ParentNotCurrentError

        target = resolve_warehouse(self.warehouse, self.warehouse_conn_id)
        info = {"dag_id": context["dag"].dag_id, "dag_run_id": context["run_id"],
                "source_table": self.source_table, "params": dict(self.run_params or {})}

        def publish(*args: Any, **kwargs: Any) -> dict[str, Any]:
            try:
                return publish_folded(*args, **kwargs)
            except ParentNotCurrentError as exc:  # a full run published meanwhile
                return {"skipped": str(exc)}

        summary = self._run(context, publish, target, model_id=model_id_for(context),
                            fold_dir=self.fold_dir, previous_dir=self.previous_dir,
                            schema=self.schema, run_info=info, keep=int(self.keep))
        if "skipped" in summary:
            raise AirflowSkipException(summary["skipped"])
        announce(self, context, summary["model_id"])
        return summary
