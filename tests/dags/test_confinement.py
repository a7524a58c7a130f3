"""A trigger's conf cannot reach beyond the deployment's data roots and loss modules.

Real ``dag.test()`` runs of ``factorize_ratings`` (and ``recommendations_daily``)
with FACTORFLOW_DATA_ROOTS set to one folder: the refused task fails once with
a message naming the param and the setting, nothing downstream runs, and
nothing is created or published.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.conftest import ROOT
from tests.dags.helpers import load_dags, task_states

pytestmark = pytest.mark.integration

# Every run names all three fields: dag.test() runs tasks in this process, and
# resolving a run's Params stores its conf in the DAG's own Param objects, so a
# field left out would keep the previous run's value.
CONF = {"source_table": "raw.ratings", "loss": "squared", "rank": 8, "epochs": 10, "top_n": 5,
        "min_rows": 1000}
AFTER_EXTRACT = ("validate", "build", "train", "publish")


@pytest.fixture(scope="module")
def site(small_warehouse, tmp_path_factory):
    """``data/`` (the only root, holding a warehouse) beside ``outside/`` (real ratings)."""
    base = tmp_path_factory.mktemp("confinement")
    root, outside = base / "data", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    warehouse = root / "warehouse.duckdb"
    shutil.copy(small_warehouse, warehouse)
    with duckdb.connect(str(small_warehouse), read_only=True) as con:
        con.execute(f"COPY raw.ratings TO '{outside / 'ratings.csv'}' (HEADER)")
    (root / "linked.csv").symlink_to(outside / "ratings.csv")
    (root / "sub" / "link-out").symlink_to(outside, target_is_directory=True)
    return {"root": root, "outside": outside, "warehouse": warehouse,
            "artifacts": base / "artifacts"}


@pytest.fixture(scope="module")
def bag(site):
    """The DAGs, parsed and run with FACTORFLOW_DATA_ROOTS = the site's data folder only
    (the workers check a conf against their own environment, at run time)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACTORFLOW_DATA_ROOTS", str(site["root"]))
        mp.setenv("FACTORFLOW_ARTIFACTS_DIR", str(site["artifacts"]))
        yield load_dags()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _failed_once(dag_run, task_id: str) -> None:
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id]
    assert str(ti.state) == "failed" and ti.try_number == 1, (ti.state, ti.try_number)


REACHING_OUT = {
    "warehouse_outside": ("warehouse", lambda s: {"warehouse": str(s["outside"] / "new.duckdb")}),
    "dot_dot": ("source_table",
                lambda s: {"source_table": f"{s['root']}/sub/../../outside/ratings.csv"}),
    "symlink": ("source_table", lambda s: {"source_table": str(s["root"] / "linked.csv")}),
    "glob": ("source_table", lambda s: {"source_table": f"{s['root']}/**/link-out/*.csv"}),
}


@pytest.mark.parametrize("case", sorted(REACHING_OUT))
def test_a_conf_reaching_out_fails_extract_once_and_touches_nothing(bag, site, case, capfd):
    param, conf = REACHING_OUT[case]
    digest = _sha256(site["warehouse"])
    dag_run = bag["factorize_ratings"].test(
        run_conf={**CONF, "warehouse": str(site["warehouse"]), **conf(site)})

    states = task_states(dag_run)
    assert states["extract"] == "failed"
    assert all(states[t] == "upstream_failed" for t in AFTER_EXTRACT), states
    _failed_once(dag_run, "extract")
    out = capfd.readouterr()
    assert f"param {param}: " in out.out + out.err
    assert "add its folder to FACTORFLOW_DATA_ROOTS on the workers" in out.out + out.err
    # nothing created outside, nothing extracted, the warehouse untouched
    assert not (site["outside"] / "new.duckdb").exists()
    assert not list(site["artifacts"].rglob("ratings.parquet"))
    assert _sha256(site["warehouse"]) == digest


def test_a_loss_outside_the_modules_is_refused_at_trigger(bag):
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.param import ParamValidationError
    from airflow.utils.session import create_session

    dag = bag["factorize_ratings"]
    with create_session() as session:
        before = session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).count()
    with pytest.raises(ParamValidationError, match=r"param loss\b"):
        dag.test(run_conf={**CONF, "loss": "os:system"})
    with create_session() as session:
        assert session.query(DagRun).filter(DagRun.dag_id == dag.dag_id).count() == before


def test_train_refuses_a_loss_the_parse_time_setting_allowed(site, capfd):
    """Parsed where FACTORFLOW_LOSS_MODULES=os, run on a worker where it is not."""
    dag = load_dags(FACTORFLOW_LOSS_MODULES="os")["factorize_ratings"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACTORFLOW_DATA_ROOTS", str(site["root"]))
        mp.setenv("FACTORFLOW_ARTIFACTS_DIR", str(site["artifacts"]))
        dag_run = dag.test(run_conf={**CONF, "warehouse": str(site["warehouse"]),
                                     "loss": "os:system"})

    states = task_states(dag_run)
    assert all(states[t] == "success" for t in ("extract", "validate", "build")), states
    assert states["train"] == "failed" and states["publish"] == "upstream_failed"
    _failed_once(dag_run, "train")
    out = capfd.readouterr()
    assert "param loss: 'os:system' is not allowed" in out.out + out.err
    assert not list(site["artifacts"].rglob("model*/*"))


def test_materialize_refuses_a_warehouse_outside(bag, site, capfd):
    outside = site["outside"] / "daily.duckdb"
    dag_run = bag["recommendations_daily"].test(run_conf={"warehouse": str(outside)})

    assert task_states(dag_run) == {"materialize": "failed"}
    _failed_once(dag_run, "materialize")
    out = capfd.readouterr()
    assert "param warehouse: " in out.out + out.err and not outside.exists()
