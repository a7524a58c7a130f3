"""The confinement checks on their own: real folders, files and symlinks under tmp_path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from factorflow.airflow.confinement import (
    Refused,
    check_loss,
    check_path,
    check_source,
    data_roots,
    loss_modules,
    loss_pattern,
)
from factorflow.paths import PROJECT_DIR

pytestmark = pytest.mark.unit


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """``root/`` (allowed) beside ``outside/``, each with a CSV, and symlinks out of root:
    ``links/link.csv`` (a file), ``links/dangling.duckdb`` (to nothing yet),
    ``hidden/.h.csv`` and ``sub/link-out`` (a folder)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    for folder in (root / "sub", root / "links", root / "hidden", outside):
        folder.mkdir(parents=True)
    for folder in (root, root / "sub", outside):
        (folder / "r.csv").write_text("user_id,item_id,rating\n1,1,5\n")
    (root / "links" / "link.csv").symlink_to(outside / "r.csv")
    (root / "links" / "dangling.duckdb").symlink_to(outside / "new.duckdb")
    (root / "hidden" / ".h.csv").symlink_to(outside / "r.csv")
    (root / "sub" / "link-out").symlink_to(outside, target_is_directory=True)
    return {"root": root, "outside": outside}


def _refused(match: str, *args, **kwargs) -> None:
    with pytest.raises(Refused, match=match):
        check_path(*args, **kwargs)


class TestDataRoots:
    def test_from_the_setting_each_resolved(self, tmp_path):
        real = tmp_path / "real"
        real.mkdir()
        (tmp_path / "alias").symlink_to(real)
        env = {"FACTORFLOW_DATA_ROOTS": f" {tmp_path / 'alias'} {os.pathsep}{os.pathsep}/srv "}
        assert data_roots(env) == (real, Path("/srv").resolve())

    def test_default_is_the_project_data_and_the_admins_warehouse_folder(self, tmp_path):
        assert data_roots({}) == (Path(os.path.realpath(PROJECT_DIR / "data")),)
        env = {"FACTORFLOW_DATA_ROOTS": " ", "FACTORFLOW_WAREHOUSE": str(tmp_path / "w.duckdb")}
        assert data_roots(env)[1] == tmp_path.resolve()

    def test_a_relative_root_is_a_configuration_error(self):
        with pytest.raises(ValueError, match="FACTORFLOW_DATA_ROOTS: 'data' is not an absolute"):
            data_roots({"FACTORFLOW_DATA_ROOTS": "data"})


class TestCheckPath:
    def test_paths_inside_pass(self, tree):
        roots = (tree["root"],)
        for path in ("r.csv", "sub/r.csv", "sub/../r.csv", "new/w.duckdb", "*.csv", "sub/*.csv"):
            check_path("source_table", str(tree["root"] / path), roots)

    def test_outside_names_the_param_and_the_setting(self, tree):
        _refused(r"^param warehouse: /etc/w\.duckdb is outside FACTORFLOW_DATA_ROOTS \(%s\); "
                 r"add its folder to FACTORFLOW_DATA_ROOTS on the workers" % re.escape(
                     str(tree["root"])), "warehouse", "/etc/w.duckdb", (tree["root"],))

    def test_dot_dot_out_is_resolved_and_refused(self, tree):
        path = f"{tree['root']}/sub/../../outside/r.csv"
        _refused(f"resolves to {tree['outside'] / 'r.csv'}", "source_table", path, (tree["root"],))

    def test_symlinks_out_are_refused_even_dangling_ones(self, tree):
        roots = (tree["root"],)
        _refused("link.csv", "source_table", str(tree["root"] / "links/link.csv"), roots)
        _refused("link-out", "source_table", str(tree["root"] / "sub/link-out/r.csv"), roots)
        _refused("new.duckdb", "warehouse", str(tree["root"] / "links/dangling.duckdb"), roots)

    def test_a_relative_path_is_refused(self, tree):
        _refused("not an absolute path", "warehouse", "w.duckdb", (tree["root"],))
        _refused("not an absolute path", "warehouse", "md:shared_db", (tree["root"],))

    # ``hidden/*.csv``: DuckDB's * matches a hidden name too
    @pytest.mark.parametrize("glob", ["../*.csv", "../outside/*.csv", "*/../../outside/*.csv",
                                      "**/link-out/*.csv", "**/*.csv", "links/*",
                                      "hidden/*.csv"])
    def test_a_glob_reaching_out_is_refused(self, tree, glob):
        _refused(r"^param source_table: .* outside FACTORFLOW_DATA_ROOTS", "source_table",
                 f"{tree['root']}/{glob}", (tree["root"],))

    def test_a_glob_names_the_match_that_leads_out(self, tree):
        _refused(r"glob \S+/links/\*\.csv matches \S+/links/link\.csv \(resolves to "
                 r"\S+/outside/r\.csv\), which is outside", "source_table",
                 f"{tree['root']}/links/*.csv", (tree["root"],))

    def test_no_roots_refuses_everything(self, tree):
        _refused(r"outside FACTORFLOW_DATA_ROOTS \(empty\)", "warehouse",
                 str(tree["root"] / "r.csv"), ())

    def test_reads_the_setting_per_call(self, tree, monkeypatch):
        monkeypatch.setenv("FACTORFLOW_DATA_ROOTS", str(tree["outside"]))
        check_path("warehouse", str(tree["outside"] / "w.duckdb"))
        _refused("outside", "warehouse", str(tree["root"] / "w.duckdb"))


def test_table_names_are_not_paths(tree):
    check_source("source_table", "raw.ratings", ())
    with pytest.raises(Refused, match="param source_table"):
        check_source("source_table", str(tree["outside"] / "r.csv"), (tree["root"],))


class TestLosses:
    def test_prefixes_from_the_setting(self):
        assert loss_modules({"FACTORFLOW_LOSS_MODULES": " mylosses, teamx.losses ,"}) == (
            "mylosses", "teamx.losses")
        assert loss_modules({}) == ()
        with pytest.raises(ValueError, match="'my losses' is not a module name"):
            loss_modules({"FACTORFLOW_LOSS_MODULES": "my losses"})

    def test_a_prefix_allows_its_modules_and_submodules_only(self):
        pattern = loss_pattern(("mylosses", "teamx.losses"))
        allowed = ["squared", "huber", "mylosses:fn", "mylosses.sub.deep:fn", "teamx.losses:f"]
        refused = ["mylossesX:fn", "os:system", "teamx:fn", "teamxXlosses:fn", "mylosses",
                   "mylosses:fn; rm", "mylosses:a.b", ".mylosses:fn", "squared\n"]
        for spec in allowed:
            assert re.search(pattern, spec), spec
            check_loss("loss", spec, ("mylosses", "teamx.losses"))
        for spec in refused:
            if spec != "squared\n":  # JSON Schema's $ (ECMA) does not match before a newline
                assert not re.search(pattern, spec), spec
            with pytest.raises(Refused, match="param loss"):
                check_loss("loss", spec, ("mylosses", "teamx.losses"))

    def test_no_prefixes_only_built_in(self):
        assert re.search(loss_pattern(()), "absolute")
        assert not re.search(loss_pattern(()), "tests.custom_losses:weighted_squared")
        with pytest.raises(Refused, match="custom losses are off until FACTORFLOW_LOSS_MODULES"):
            check_loss("loss", "tests.custom_losses:weighted_squared", ())

    def test_the_worker_refuses_what_a_differently_set_parse_allowed(self, monkeypatch):
        assert re.search(loss_pattern(loss_modules({"FACTORFLOW_LOSS_MODULES": "os"})),
                         "os:system")
        monkeypatch.setenv("FACTORFLOW_LOSS_MODULES", "tests.custom_losses")
        with pytest.raises(Refused, match=r"param loss: 'os:system' is not allowed.*"
                                          r"tests\.custom_losses.*add its module "
                                          r"prefix to FACTORFLOW_LOSS_MODULES on the workers"):
            check_loss("loss", "os:system")
        check_loss("loss", "tests.custom_losses:weighted_squared")
        check_loss("loss", None)  # the engine's default
        with pytest.raises(Refused):
            check_loss("loss", ["os:system"])


def test_the_operators_fail_without_retries(tree, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from factorflow.airflow.operators import resolve_warehouse

    monkeypatch.setenv("FACTORFLOW_DATA_ROOTS", str(tree["root"]))
    outside = tree["outside"] / "new.duckdb"
    with pytest.raises(AirflowFailException, match="param warehouse"):
        resolve_warehouse(str(outside), None)
    assert not outside.exists()
    assert resolve_warehouse(str(tree["root"] / "w.duckdb"), "") == str(tree["root"] / "w.duckdb")
