"""Helpers shared by the DAG tests."""

from __future__ import annotations


def task_states(dag_run) -> dict[str, str]:
    """``{task_id: state}`` of a finished ``dag.test()`` run."""
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
