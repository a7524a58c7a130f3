"""The trigger form: every Param typed, described and bounded; bad conf rejected
before any task runs, naming the field."""

from __future__ import annotations

import pytest

from tests.dags.helpers import load_dags

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dags():
    return load_dags()


def _schemas(dag):
    return {name: dag.params.get_param(name) for name in dag.params}


def test_every_param_is_typed_described_and_bounded(dags):
    for dag_id, dag in dags.items():
        for name, param in _schemas(dag).items():
            schema = param.schema
            assert schema.get("type"), f"{dag_id}.{name} has no type"
            assert param.description and len(param.description) > 15, f"{dag_id}.{name} undescribed"
            types = {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
            if types & {"integer", "number"}:
                assert "enum" in schema or (
                    ({"minimum", "exclusiveMinimum"} & set(schema))
                    and ({"maximum", "exclusiveMaximum"} & set(schema))), f"{dag_id}.{name} unbounded"
            if "string" in types:
                assert {"enum", "pattern", "minLength"} & set(schema), f"{dag_id}.{name} unchecked"
            param.resolve(param.value)  # every default passes its own schema


def test_names_come_from_the_engines_registry(dags):
    from factorflow.choices import LOSS_NAMES, OPTIMIZER_NAMES

    params = _schemas(dags["factorize_ratings"])
    assert params["optimizer"].schema["enum"] == list(OPTIMIZER_NAMES)
    assert params["loss"].schema["examples"] == list(LOSS_NAMES)


BAD = [
    ({"rank": 0}, "rank"), ({"rank": 4096}, "rank"), ({"epochs": "ten"}, "epochs"),
    ({"learning_rate": -1}, "learning_rate"), ({"optimizer": "newton9"}, "optimizer"),
    ({"loss": "os:system; rm"}, "loss"), ({"source_table": "x; DROP TABLE y"}, "source_table"),
    ({"schema": 'a"b'}, "schema"), ({"keep": 0}, "keep"), ({"valid_fraction": 0.9}, "valid_fraction"),
    ({"warehouse_conn_id": "bad id!"}, "warehouse_conn_id"), ({"restarts": 1000}, "restarts"),
]


@pytest.mark.parametrize("conf,field", BAD, ids=[f for _, f in BAD])
def test_a_bad_conf_is_rejected_before_any_task_runs(dags, conf, field):
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.param import ParamValidationError
    from airflow.utils.session import create_session

    dag = dags["factorize_ratings"]
    with create_session() as session:
        before = session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).count()
    with pytest.raises(ParamValidationError, match=rf"param {field}\b"):
        dag.test(run_conf=conf)
    with create_session() as session:
        assert session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).count() == before


def test_the_form_can_trigger_with_its_defaults(dags):
    """What Airflow's form needs to enable Trigger: a required field (a type list
    without "null") must have a value; optional fields admit null and default to it;
    every field sits in a section; bounds the form clamps to are in the description."""
    from factorflow.airflow.params import bounds_text

    for dag_id, dag in dags.items():
        for name, param in _schemas(dag).items():
            schema, types = param.schema, param.schema["type"]
            optional = isinstance(types, list) and "null" in types
            assert optional or param.value not in (None, ""), f"{dag_id}.{name}: empty required"
            if param.description.startswith("Optional."):
                assert optional and param.value is None, f"{dag_id}.{name}"
            assert schema.get("section"), f"{dag_id}.{name} has no section"
            if "maximum" in schema:
                assert param.description.endswith(bounds_text(schema)), f"{dag_id}.{name}"


def test_bounds_read_as_a_person_writes_them():
    from factorflow.airflow.params import bounds_text

    assert bounds_text({"minimum": 1, "maximum": 1024}) == "Between 1 and 1,024."
    assert bounds_text({"minimum": 0, "maximum": 0.5}) == "Between 0 and 0.5."
    assert bounds_text({"exclusiveMinimum": 0, "maximum": 10}) == "Above 0, at most 10."
    assert bounds_text({"minimum": 1}) == ""
