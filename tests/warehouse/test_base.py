"""The warehouse interface: the back end chosen once, shared SQL names, statement splitting."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factorflow.paths import INCLUDE_DIR, read_queries
from factorflow.warehouse import open_warehouse
from factorflow.warehouse.base import statements
from factorflow.warehouse.duckdb import DuckDBWarehouse
from factorflow.warehouse.postgres import PostgresWarehouse
from factorflow.warehouse.postgres_targets import PostgresTarget

pytestmark = pytest.mark.unit

#: Queries only one dialect needs: DuckDB's views cast to the model's width;
#: PostgreSQL serializes publishers, defines SQL functions, migrates only when
#: needed, and reads a table's column types before its COPY.
DIALECT_ONLY = {"duckdb": {"model_width"},
                "postgres": {"advisory_lock", "lock_holder", "create_functions", "schema_state",
                             "columns"}}


class TestOpenWarehouse:
    def test_a_path_is_a_duckdb_file(self, tmp_path):
        warehouse = open_warehouse(tmp_path / "wh.duckdb")
        assert isinstance(warehouse, DuckDBWarehouse)
        assert warehouse.name == str(tmp_path / "wh.duckdb")
        assert not (tmp_path / "wh.duckdb").exists()  # opening connects to nothing

    @pytest.mark.parametrize("uri", ["postgresql://u:secret@h:5432/db", "postgres://u:secret@h/db",
                                     "postgresql+psycopg2://u:secret@h/db"])
    def test_a_uri_is_postgres_without_its_password(self, uri):
        warehouse = open_warehouse(uri)
        assert isinstance(warehouse, PostgresWarehouse)
        assert "secret" not in warehouse.name and "u:***@h" in warehouse.name

    def test_a_target_or_a_warehouse_is_kept(self):
        target = PostgresTarget(connect=lambda: None, name="connection wh (h:5432/db)")
        warehouse = open_warehouse(target)
        assert isinstance(warehouse, PostgresWarehouse) and warehouse.name == target.name
        assert open_warehouse(warehouse) is warehouse


def test_both_dialects_have_the_same_files_and_query_names():
    files = {d: sorted(p.name for p in (INCLUDE_DIR / "sql" / d).glob("*.sql"))
             for d in DIALECT_ONLY}
    assert files["duckdb"] == files["postgres"] and "publish.sql" in files["duckdb"]
    for file in files["duckdb"]:
        names = {d: set(read_queries(f"{d}/{file}")) - DIALECT_ONLY[d] for d in DIALECT_ONLY}
        assert names["duckdb"] == names["postgres"], file


def test_statements_split_on_semicolons_but_not_inside_a_function_body():
    sql = ("-- a comment; not a statement\nCREATE SCHEMA s;\n"
           "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$;\n\nSELECT 2;")
    assert statements(sql) == ["CREATE SCHEMA s", "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$",
                               "SELECT 2"]
    assert statements("-- only a comment") == []


def test_the_package_imports_no_driver():
    """The trigger form's params import warehouse.identifiers at DAG parse time."""
    code = ("import sys, factorflow.warehouse.identifiers; "
            "print(sorted({'duckdb', 'psycopg', 'psycopg2', 'pyarrow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
