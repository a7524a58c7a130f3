"""Tests for factorflow.stages.validate: the real GX suite on small Parquet files."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factorflow.stages.validate import RatingsValidationError, validate_ratings
from factorflow.paths import expectation_suite_path

pytestmark = pytest.mark.unit

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
SCALE = {"rating_min": 1.0, "rating_max": 5.0}


def write(path: Path, **columns) -> Path:
    """Write ``columns`` (name -> list or pyarrow array) as a Parquet file."""
    pq.write_table(pa.table(columns), path)
    return path


def clean_columns(n: int = 6) -> dict:
    return {
        "user_id": pa.array([i // 2 for i in range(n)], pa.int64()),
        "item_id": pa.array([i % 3 for i in range(n)], pa.int64()),
        "rating": pa.array([1.0 + (i % 5) for i in range(n)], pa.float32()),
        "rated_at": pa.array([dt.datetime(2024, 1, 1 + i) for i in range(n)], pa.timestamp("us")),
    }


def failure(err: RatingsValidationError, expectation: str, column: str | None = None) -> dict:
    """The one failure of ``expectation`` (on ``column``) in ``err``."""
    found = [
        f
        for f in err.failures
        if f["expectation"] == expectation and (column is None or column in f["columns"])
    ]
    assert len(found) == 1, err.report
    return found[0]


def run_python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGINS)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.fixture(scope="module")
def clean_file(tmp_path_factory) -> Path:
    return write(tmp_path_factory.mktemp("ratings") / "clean.parquet", **clean_columns())


def test_import_loads_neither_gx_nor_pandas():
    proc = run_python(
        "import sys, factorflow.stages.validate\n"
        "print(sorted(m for m in ('great_expectations', 'pandas') if m in sys.modules))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_suite_file_is_gx_json_with_parameters():
    import great_expectations as gx

    doc = json.loads(expectation_suite_path("ratings.json").read_text())
    suite = gx.ExpectationSuite(**doc)
    assert len(suite.expectations) == len(doc["expectations"]) == 7
    text = json.dumps(doc["expectations"])
    for name in ("rating_min", "rating_max", "min_rows"):
        assert json.dumps({"$PARAMETER": name}) in text
    assert all(e.get("description") for e in doc["expectations"])
    # Every column the suite reads has its allowed types (checked before its rows).
    read = {c for e in doc["expectations"] for c in
            [e["kwargs"].get("column"), *e["kwargs"].get("column_list", [])] if c}
    assert read <= set(doc["meta"]["column_types"])


def test_clean_file_passes_with_json_safe_summary(clean_file):
    summary = validate_ratings(clean_file, **SCALE, min_rows=6)
    assert summary["success"] is True
    assert summary["n_rows"] == 6
    assert summary["expectations"] == len(summary["evaluated"]) == 7
    assert "expect_compound_columns_to_be_unique(user_id, item_id)" in summary["evaluated"]
    assert summary["parameters"] == {"rating_min": 1.0, "rating_max": 5.0, "min_rows": 6}
    assert json.loads(json.dumps(summary)) == summary


def test_string_uuid_ids_pass(tmp_path):
    users = [str(uuid.uuid4()) for _ in range(3)]
    items = [str(uuid.uuid4()) for _ in range(2)]
    path = write(
        tmp_path / "uuid.parquet",
        user_id=[u for u in users for _ in items],
        item_id=items * len(users),
        rating=[1.0, 2.5, 3.0, 4.0, 4.5, 5.0],
    )
    assert validate_ratings(path, **SCALE)["n_rows"] == 6


def test_null_ratings_name_not_null_expectation(tmp_path):
    cols = clean_columns()
    cols["rating"] = pa.array([1.0, None, 3.0, None, 5.0, 2.0], pa.float32())
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(write(tmp_path / "r.parquet", **cols), **SCALE)
    f = failure(exc.value, "expect_column_values_to_not_be_null", "rating")
    assert f["unexpected_count"] == 2
    assert f["examples"][0] == {"row": 1, "user_id": 0, "item_id": 1, "rating": None}
    assert "expect_column_values_to_not_be_null(rating)" in str(exc.value)
    assert "2 of 6 rows unexpected (33.33%)" in str(exc.value)
    assert len(exc.value.failures) == 1  # a null is not also "out of range"


def test_out_of_range_ratings_show_bad_values(tmp_path):
    cols = clean_columns()
    cols["rating"] = pa.array([1.0, 0.0, 3.0, 7.5, 5.0, 2.0], pa.float32())
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(write(tmp_path / "r.parquet", **cols), **SCALE)
    f = failure(exc.value, "expect_column_values_to_be_between", "rating")
    assert f["unexpected_count"] == 2
    assert [e["rating"] for e in f["examples"]] == [0.0, 7.5]
    report = str(exc.value)
    assert "expect_column_values_to_be_between(rating)" in report
    assert "row 3: user_id=1, item_id=0, rating=7.5" in report


def test_duplicate_pairs_are_shown(tmp_path):
    path = write(
        tmp_path / "r.parquet",
        user_id=pa.array([1, 1, 2, 3, 3, 3], pa.int64()),
        item_id=pa.array([7, 7, 7, 8, 8, 9], pa.int64()),
        rating=[1.0, 2.0, 3.0, 4.0, 4.0, 5.0],
    )
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(path, **SCALE)
    f = failure(exc.value, "expect_compound_columns_to_be_unique")
    assert f["unexpected_count"] == 4
    assert f["examples"] == [
        {"duplicate": {"user_id": 1, "item_id": 7}, "rows": 2},
        {"duplicate": {"user_id": 3, "item_id": 8}, "rows": 2},
    ]
    assert "duplicated pair: user_id=1, item_id=7 (2 rows)" in str(exc.value)


def test_too_few_rows(clean_file):
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(clean_file, **SCALE, min_rows=100)
    f = failure(exc.value, "expect_table_row_count_to_be_between")
    assert f["observed_value"] == 6
    assert "observed row count 6; expected at least 100" in str(exc.value)


def test_missing_column_is_named(tmp_path):
    cols = clean_columns()
    del cols["rating"]
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(write(tmp_path / "r.parquet", **cols), **SCALE)
    f = failure(exc.value, "expect_table_columns_to_match_set")
    assert f["missing_columns"] == ["rating"]
    assert "missing column(s): rating" in str(exc.value)
    # Checks on the absent column are reported as not evaluated, not as crashes.
    skipped = [x for x in exc.value.failures if x["columns"] == ["rating"]]
    assert len(skipped) == 2
    assert all(x["error"] == "not evaluated: missing column(s) rating" for x in skipped)


def test_several_failures_are_all_listed(tmp_path):
    path = write(
        tmp_path / "r.parquet",
        user_id=["a", "a", None, "c"],
        item_id=["x", "x", "y", "z"],
        rating=[1.0, 9.0, 2.0, None],
    )
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(path, **SCALE, min_rows=10)
    got = [(f["expectation"], f["columns"]) for f in exc.value.failures]
    assert got == [
        ("expect_table_row_count_to_be_between", []),
        ("expect_column_values_to_not_be_null", ["user_id"]),
        ("expect_column_values_to_not_be_null", ["rating"]),
        ("expect_column_values_to_be_between", ["rating"]),
        ("expect_compound_columns_to_be_unique", ["user_id", "item_id"]),
    ]
    report = str(exc.value)
    assert report.startswith("ratings validation failed for ")
    assert "5 of 7 expectations failed" in report
    assert "row 1: user_id='a', item_id='x', rating=9.0" in report
    assert "duplicated pair: user_id='a', item_id='x' (2 rows)" in report
    assert isinstance(exc.value, ValueError)
    assert json.loads(json.dumps(exc.value.failures)) == exc.value.failures


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rating_min": 5.0, "rating_max": 1.0},
        {"rating_min": 1.0, "rating_max": 1.0},
        {"rating_min": float("nan"), "rating_max": 5.0},
        {**SCALE, "min_rows": -1},
        {**SCALE, "min_rows": 1.5},
    ],
)
def test_bad_config_raises_value_error(clean_file, kwargs):
    with pytest.raises(ValueError) as exc:
        validate_ratings(clean_file, **kwargs)
    assert not isinstance(exc.value, RatingsValidationError)


def test_suite_with_unknown_expectation_type_is_rejected(tmp_path, clean_file):
    doc = json.loads(expectation_suite_path("ratings.json").read_text())
    doc["expectations"].append({"type": "expect_no_such_thing", "kwargs": {}})
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="only 7 of 8 expectations"):
        validate_ratings(clean_file, **SCALE, suite_path=suite)


def test_no_progress_bars_on_stdout_or_stderr(clean_file, tmp_path, capfd):
    validate_ratings(clean_file, **SCALE)
    with pytest.raises(RatingsValidationError):
        validate_ratings(clean_file, **SCALE, min_rows=100)
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err
    assert "it/s" not in out + err


def test_no_gx_chatter_in_a_fresh_process_logging_at_info(clean_file):
    # A fresh interpreter, so GX is imported here with root logging at INFO (as
    # in an Airflow task); nothing from GX or tqdm may reach the log, only the
    # stage's own progress lines.
    proc = run_python(
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from factorflow.stages.validate import validate_ratings\n"
        f"print(validate_ratings({str(clean_file)!r}, rating_min=1, rating_max=5)['success'])"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
    assert proc.stderr.splitlines() == [
        "INFO:factorflow.stages.validate:validate: rows partitioned 6 / 6 (100.0%) in 0 s",
        "INFO:factorflow.stages.validate:validate: rows checked 6 / 6 (100.0%) in 0 s",
    ]


# --- batches: the table partitioned, each part validated by GX, results added up ---


def dirty_table(n: int = 50) -> dict:
    """Every kind of failure, spread over the table; duplicates far apart."""
    users = [i // 3 for i in range(n)]
    items = [i % 3 for i in range(n)]
    users[-1], items[-1] = users[0], items[0]  # first and last rows: one pair
    users[30], items[30] = users[20], items[20]  # and another
    ratings = [1.0 + (i % 5) for i in range(n)]
    for row, value in {7: None, 13: float("nan"), 26: 9.0, 41: float("inf"), 45: 0.5,
                       47: -float("inf")}.items():
        ratings[row] = value
    user_ids = pa.array([None if i in (11, 43) else u for i, u in enumerate(users)], pa.int64())
    item_ids = pa.array([None if i == 38 else v for i, v in enumerate(items)], pa.int64())
    return {"user_id": user_ids, "item_id": item_ids, "rating": pa.array(ratings, pa.float32())}


def run_failures(path: Path, **kwargs) -> RatingsValidationError:
    with pytest.raises(RatingsValidationError) as exc:
        validate_ratings(path, **SCALE, **kwargs)
    return exc.value


@pytest.fixture
def parts_seen(monkeypatch) -> list[int]:
    """How many parts each validation split its table into."""
    import factorflow.stages.validate as checks

    seen: list[int] = []
    real = checks.partition_parquet

    def spy(*args, **kwargs):
        files = real(*args, **kwargs)
        seen.append(len(files))
        return files

    monkeypatch.setattr(checks, "partition_parquet", spy)
    return seen


def test_batches_report_what_one_batch_reports(tmp_path, parts_seen):
    path = write(tmp_path / "dirty.parquet", **dirty_table())
    whole = run_failures(path, batch_rows=10**9)
    parts = run_failures(path, batch_rows=7)
    assert parts_seen[0] == 1 and parts_seen[1] >= 5  # 50 rows in parts of about 7, ragged
    assert parts.failures == whole.failures
    assert parts.report == whole.report


def test_batched_counts_and_rows_are_the_whole_tables(tmp_path):
    path = write(tmp_path / "dirty.parquet", **dirty_table())
    err = run_failures(path, batch_rows=7)
    assert failure(err, "expect_column_values_to_not_be_null", "user_id")["unexpected_count"] == 2
    assert failure(err, "expect_column_values_to_not_be_null", "item_id")["unexpected_count"] == 1
    nulls = failure(err, "expect_column_values_to_not_be_null", "rating")
    assert nulls["unexpected_count"] == 2  # None and NaN
    assert [e["row"] for e in nulls["examples"]] == [7, 13]
    scale = failure(err, "expect_column_values_to_be_between", "rating")
    assert scale["unexpected_count"] == 4  # 9.0, inf, 0.5, -inf
    assert [e["row"] for e in scale["examples"]] == [26, 41, 45, 47]
    assert scale["unexpected_percent"] == pytest.approx(100 * 4 / 50)
    # The table's row number, though parts hold about 7 rows.
    assert "row 45: user_id=15, item_id=0, rating=0.5" in err.report
    unique = failure(err, "expect_compound_columns_to_be_unique")
    assert unique["unexpected_count"] == 4
    assert {"duplicate": {"user_id": 0, "item_id": 0}, "rows": 2} in unique["examples"]
    assert {"duplicate": {"user_id": 6, "item_id": 2}, "rows": 2} in unique["examples"]


def test_many_duplicates_keep_their_order_and_exact_counts(tmp_path):
    # 30 duplicated rows (more than GX lists): counts per pair are then not
    # shown, and the pairs named are those of the table's first offending rows.
    n = 60
    path = write(tmp_path / "dups.parquet", user_id=pa.array([i % 15 for i in range(n)], pa.int64()),
                 item_id=pa.array([(i % 15) % 4 + (i >= 30) * 10 for i in range(n)], pa.int64()),
                 rating=[3.0] * n)
    assert run_failures(path, batch_rows=4).failures == run_failures(path, batch_rows=n).failures


@pytest.mark.parametrize("change", ["text_ratings", "string_ids", "no_item_id", "no_rows"])
def test_batches_keep_the_behaviour_of_one_batch(tmp_path, change):
    cols = clean_columns(12)
    if change == "text_ratings":
        cols["rating"] = pa.array(["1", "2", "x"] * 4)
    elif change == "string_ids":
        cols["user_id"] = pa.array([f"u{i % 4}" if i != 5 else None for i in range(12)])
        cols["item_id"] = pa.array([f"i{i % 2}" for i in range(12)])
    elif change == "no_item_id":
        del cols["item_id"]
    else:
        cols = {k: v.slice(0, 0) for k, v in cols.items()}
    path = write(tmp_path / "r.parquet", **cols)
    whole = run_failures(path, batch_rows=10**9, min_rows=1)
    assert run_failures(path, batch_rows=5, min_rows=1).report == whole.report
    if change == "text_ratings":  # the type check, before any batch: named, not "evaluated"
        f = failure(whole, "column_type", "rating")
        assert f["observed_value"] == "VARCHAR" and f["unexpected_count"] == 4
    if change == "no_rows":
        assert [f["expectation"] for f in whole.failures] == ["expect_table_row_count_to_be_between"]


def test_mostly_is_judged_on_the_whole_table(tmp_path):
    doc = json.loads(expectation_suite_path("ratings.json").read_text())
    between = next(e for e in doc["expectations"] if e["type"] == "expect_column_values_to_be_between")
    between["kwargs"]["mostly"] = 0.9
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(doc))
    cols = clean_columns(20)
    cols["rating"] = pa.array([9.0 if i in (2, 15) else 3.0 for i in range(20)], pa.float32())
    path = write(tmp_path / "r.parquet", **cols)  # 2 of 20 bad: 90% good, passes
    assert validate_ratings(path, **SCALE, suite_path=suite, batch_rows=3)["success"] is True
    cols["rating"] = pa.array([9.0 if i in (2, 15, 16) else 3.0 for i in range(20)], pa.float32())
    path = write(tmp_path / "r.parquet", **cols)  # 85%: fails, though most parts pass
    err = run_failures(path, suite_path=suite, batch_rows=3)
    assert failure(err, "expect_column_values_to_be_between")["unexpected_count"] == 3


def test_expectations_batches_cannot_answer_are_refused(tmp_path, clean_file):
    doc = json.loads(expectation_suite_path("ratings.json").read_text())
    doc["expectations"].append({"type": "expect_column_mean_to_be_between",
                                "kwargs": {"column": "rating", "min_value": 1}})
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="expect_column_mean_to_be_between .* cannot be checked"):
        validate_ratings(clean_file, **SCALE, suite_path=suite)


def test_progress_lines_go_to_log(clean_file):
    lines: list[str] = []
    validate_ratings(clean_file, **SCALE, batch_rows=2, log=lines.append)
    assert lines == ["validate: rows partitioned 6 / 6 (100.0%) in 0 s",
                     "validate: rows checked 6 / 6 (100.0%) in 0 s"]


@pytest.mark.parametrize("batch_rows", [0, -5, 2.5, True])
def test_batch_rows_must_be_a_positive_integer(clean_file, batch_rows):
    with pytest.raises(ValueError, match="batch_rows"):
        validate_ratings(clean_file, **SCALE, batch_rows=batch_rows)


def test_no_scratch_files_are_left(tmp_path):
    path = write(tmp_path / "dirty.parquet", **dirty_table())
    run_failures(path, batch_rows=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dirty.parquet"]
