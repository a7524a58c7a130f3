"""Helpers shared by the DAG tests."""

from __future__ import annotations


def task_states(dag_run) -> dict[str, str]:
    """``{task_id: state}`` of a finished ``dag.test()`` run."""
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def load_dags(**env: str | None) -> dict:
    """``{dag_id: DAG}`` parsed from ``dags/`` with ``env`` set (None unsets a variable).

    The environment holds only while the DAG files are parsed: what a DAG reads
    at parse time (queues, data roots, loss modules) is what a scheduler with
    that environment would see. Fails on any import error.
    """
    import pytest
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            if value is None:
                mp.delenv(key, raising=False)
            else:
                mp.setenv(key, value)
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags
