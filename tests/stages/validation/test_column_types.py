"""Column types: real DuckDB tables with wrongly typed columns, extracted, then validated.

Each table is made in a DuckDB warehouse with the type a user would get (text
ratings loaded from a CSV as VARCHAR, ids as DOUBLE, DATE, lists...), copied by
``extract_ratings`` to Parquet as the pipeline does, then validated: the report
names the column, its type, how many values a cast would lose with a few of
them, and the cast to put in the source query.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from factorflow.stages.extract import extract_ratings
from factorflow.stages.validate import RatingsValidationError, validate_ratings

pytestmark = pytest.mark.unit

SCALE = {"rating_min": 1.0, "rating_max": 5.0}
N = 10_000
# A clean table: user i rates item i % 97, 1..5; every column a query replaces is typed.
CLEAN = {"user_id": "i", "item_id": "i % 97", "rating": "CAST(1 + i % 5 AS DOUBLE)",
         "rated_at": "TIMESTAMP '2024-01-01' + to_seconds(i)"}


def extracted(tmp_path: Path, n: int = N, **columns: str) -> Path:
    """The Parquet file the extract stage makes from a DuckDB table of ``n`` rows.

    ``columns`` replace (or, with None, drop) :data:`CLEAN`'s SQL expressions of ``i``.
    """
    exprs = {**CLEAN, **columns}
    select = ", ".join(f"{sql} AS {name}" for name, sql in exprs.items() if sql is not None)
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA raw")
        con.execute(f"CREATE TABLE raw.ratings AS SELECT {select} FROM range({n}) t(i)")
    return Path(extract_ratings(warehouse, "raw.ratings", tmp_path / "extract")["path"])


def rejected(path: Path, **kwargs) -> RatingsValidationError:
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(path, **SCALE, **kwargs)
    assert isinstance(exc.value, ValueError)  # the Airflow layer does not retry it
    return exc.value


def type_failure(err: RatingsValidationError, column: str) -> dict:
    [found] = [f for f in err.failures if f["expectation"] == "column_type"
               and f["columns"] == [column]]
    return found


def test_numbers_stored_as_text_are_rejected_with_the_cast_to_use(tmp_path):
    err = rejected(extracted(tmp_path, rating="CAST(1 + i % 5 AS DOUBLE)::VARCHAR"))
    f = type_failure(err, "rating")
    assert f["observed_value"] == "VARCHAR" and f["unexpected_count"] == 0
    report = err.report
    assert "column rating has type VARCHAR (text); expected integers, floats or decimals: " \
           f"all {N} values are numbers stored as text" in report
    assert "row 0: user_id=0, item_id=0, rating='1.0'" in report
    assert "to do: cast it in the source query, e.g. a view selecting CAST(rating AS DOUBLE) " \
           "AS rating" in report
    assert "could not be evaluated" not in report and "min_value" not in report
    assert len(err.failures) == 1


def test_one_word_in_ten_thousand_is_counted_and_shown(tmp_path):
    err = rejected(extracted(tmp_path, rating="CASE WHEN i = 4321 THEN 'five' "
                                              "ELSE CAST(1 + i % 5 AS VARCHAR) END"))
    f = type_failure(err, "rating")
    assert f["unexpected_count"] == 1
    assert f["unexpected_percent"] == pytest.approx(100 / N)
    assert f["examples"] == [{"row": 4321, "user_id": 4321, "item_id": 4321 % 97,
                              "rating": "five"}]
    assert f"1 of {N} values are not numbers (0.01%)" in err.report
    assert "row 4321: user_id=4321, item_id=53, rating='five'" in err.report
    assert "first fix or drop the 1 row(s) that are not numbers" in f["advice"]
    assert err.report.startswith(f"ratings validation failed for {tmp_path / 'extract'}")
    assert "wrong type in column(s) rating, so the 5 row-level expectations were not run" \
        in err.report


@pytest.mark.parametrize("sql, sql_type, detail, example", [
    ("i + 0.5", "DECIMAL", f"{N} of {N} values are not whole numbers (100.00%)", "user_id=0.5"),
    ("CAST(i AS DOUBLE) * CASE WHEN i = 7 THEN 1.5 ELSE 1 END", "DOUBLE",
     f"1 of {N} values are not whole numbers (0.01%)", "row 7: user_id=10.5"),
    ("CAST(i AS DECIMAL(18, 0))", "DECIMAL(18,0)",
     f"all {N} values are whole numbers stored as decimals", "row 0: user_id=0,"),
    ("i % 2 = 0", "BOOLEAN", f"{N} value(s), and booleans are not ids", "user_id=True"),
    ("DATE '2024-01-01' + CAST(i AS INTEGER)", "DATE", f"{N} value(s), and dates are not ids",
     "user_id='2024-01-01'"),
    ("[i, i + 1]", "BIGINT[]", f"{N} value(s), and lists are not ids", "user_id=[0, 1]"),
    ("{'id': i}", "STRUCT(id BIGINT)", f"{N} value(s), and structs are not ids",
     "user_id={'id': 0}"),
], ids=["decimal-fractions", "double-one-fraction", "decimal-whole", "boolean", "date", "list",
        "struct"])
def test_ids_of_other_types_are_named(tmp_path, sql, sql_type, detail, example):
    err = rejected(extracted(tmp_path, user_id=sql))
    f = type_failure(err, "user_id")
    assert f["observed_value"].startswith(sql_type)
    assert f"column user_id has type {sql_type}" in err.report
    assert f"expected integers or text: {detail}" in err.report
    assert example in err.report
    assert "CAST(user_id AS BIGINT)" in f["advice"]
    assert json.loads(json.dumps(err.failures)) == err.failures


def test_timestamps_stored_as_text(tmp_path):
    err = rejected(extracted(tmp_path, rated_at="CASE WHEN i = 9 THEN 'yesterday' "
                                                 "ELSE CAST(DATE '2024-01-01' AS VARCHAR) END"))
    f = type_failure(err, "rated_at")
    assert f["unexpected_count"] == 1
    assert f"column rated_at has type VARCHAR (text); expected timestamps or dates: 1 of {N} " \
           "values are not timestamps" in err.report
    assert "rated_at='yesterday'" in err.report
    assert "CAST(rated_at AS TIMESTAMP)" in f["advice"]


def test_boolean_ratings_are_not_numbers(tmp_path):
    # GX's range check passes True as 1: only the type check stops them.
    err = rejected(extracted(tmp_path, rating="i % 3 = 0"))
    assert f"column rating has type BOOLEAN (boolean); expected integers, floats or decimals: " \
           f"{N} value(s), and booleans are not numbers" in err.report


def test_every_wrong_column_is_listed_beside_the_table_checks(tmp_path):
    path = extracted(tmp_path, n=50, user_id="CAST(i AS DOUBLE) / 2", item_id=None,
                     rating="CAST(i % 5 + 1 AS VARCHAR)", rated_at="'soon'")
    err = rejected(path, min_rows=100)
    got = [(f["expectation"], f["columns"]) for f in err.failures]
    assert got == [("column_type", ["user_id"]), ("column_type", ["rating"]),
                   ("column_type", ["rated_at"]),
                   ("expect_table_columns_to_match_set", []),
                   ("expect_table_row_count_to_be_between", [])]
    assert "wrong type in column(s) user_id, rating, rated_at, so the 5 row-level expectations " \
           "were not run; 2 of the other 2 failed" in err.report
    assert "missing column(s): item_id" in err.report


@pytest.mark.parametrize("columns", [
    {"rating": "CAST(3.5 AS DECIMAL(3, 1))"},  # DuckDB types the literal 3.5 so
    {"rating": "CAST(1 + i % 5 AS TINYINT)"},
    {"user_id": "CAST(i AS UINTEGER)", "item_id": "'item-' || (i % 97)"},
    {"rated_at": "DATE '2024-01-01' + CAST(i % 300 AS INTEGER)"},
    {"rated_at": "TIMESTAMPTZ '2024-01-01 00:00:00+00'"},
    {"rated_at": None},
], ids=["decimal-rating", "tinyint-rating", "uint-and-text-ids", "date", "timestamptz", "none"])
def test_allowed_types_pass(tmp_path, columns):
    assert validate_ratings(extracted(tmp_path, **columns), **SCALE)["success"] is True


def test_decimal_ratings_out_of_scale_show_as_numbers(tmp_path):
    err = rejected(extracted(tmp_path, n=20, rating="CAST(CASE WHEN i = 4 THEN 7.5 ELSE 2.5 END "
                                                    "AS DECIMAL(3, 1))"))
    assert "row 4: user_id=4, item_id=4, rating=7.5" in err.report


def test_an_all_null_rating_is_left_to_the_not_null_check(tmp_path):
    err = rejected(extracted(tmp_path, n=5, rating="NULL"))
    assert [f["expectation"] for f in err.failures] == ["expect_column_values_to_not_be_null"]


def test_a_clean_table_never_opens_duckdb_to_check_types(tmp_path):
    # The types come from the footer; only a wrong one costs a scan.
    path = extracted(tmp_path, n=100)
    code = ("import sys\nfrom factorflow.stages.validate import validate_ratings\n"
            f"validate_ratings({str(path)!r}, rating_min=1, rating_max=5)\n"
            "print('duckdb' in sys.modules)")
    plugins = Path(__file__).resolve().parents[3] / "plugins"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(plugins)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
