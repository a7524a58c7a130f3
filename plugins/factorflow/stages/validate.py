"""Validate: run the ratings expectation suite (Great Expectations 1.x) on a Parquet file.

The suite itself is data (``include/expectations/ratings.json``, GX's own
ExpectationSuite JSON); the rating scale and the minimum row count are suite
parameters (``{"$PARAMETER": ...}``) supplied here at run time, so one suite
serves every configuration.

GX sees the table in pieces of bounded size, so memory does not grow with it:

- table-level expectations (columns, row count) run once, on frames made from
  the file's footer: no rows and the file's columns, or no columns and the
  file's row count;
- row-level expectations run on every row, one batch at a time. The table is
  split by a hash of the columns that uniqueness expectations compare
  (:mod:`factorflow.stages.validation.partitions`), so duplicates meet in one batch and each
  batch's uniqueness check is the whole table's; a batch's index is the
  table's row numbers, and :mod:`factorflow.stages.validation.batch_results` adds the batches'
  results up into the table's. The report (:mod:`factorflow.stages.validation.report`)
  reads as if GX had seen the whole table at once.

``great_expectations`` (and pandas) are imported inside functions only: Airflow
imports this package while parsing DAG files, and importing GX takes seconds.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from factorflow.stages.validation.batch_results import MapTally, Outcome
from factorflow.stages.validation.column_types import check_column_types
from factorflow.stages.validation.gx_runs import (
    FOOTER_METRICS, SuiteRunner, footer, frame_of, import_gx, metric_names, validate_on_footer)
from factorflow.scratch import scratch_dir
from factorflow.stages.validation.partitions import partition_parquet, read_part
from factorflow.stages.progress import Progress
from factorflow.stages.validation.report import (
    ID_COLUMNS, MAX_EXAMPLES, columns_of, describe_failure, label, row_values)

logger = logging.getLogger(__name__)

#: Rows GX validates at a time (about: parts of a hash partition vary a little).
BATCH_ROWS = 1_000_000
# GX returns at most this many offending values per expectation; more than we
# print, so that duplicates collapse to distinct pairs with an exact count.
_PARTIAL_UNEXPECTED_COUNT = 20
# SUMMARY (not COMPLETE) so a badly broken file does not materialise every bad
# value; without unexpected_index_column_names GX reports the batch's index,
# i.e. the table's row numbers, which work even when an id column is missing.
_RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": _PARTIAL_UNEXPECTED_COUNT}

#: Row-level expectations that compare a row with every other row.
UNIQUENESS_EXPECTATIONS = frozenset({
    "expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"})
#: Row-level expectations a batch cannot answer for the table: they depend on
#: the order across batches, or on dtypes (batches carry floats as float64).
UNBATCHABLE_EXPECTATIONS = frozenset({
    "expect_column_values_to_be_increasing", "expect_column_values_to_be_decreasing",
    "expect_column_values_to_be_of_type", "expect_column_values_to_be_in_type_list"})


class RatingsValidationError(ValueError):
    """The ratings file failed the expectation suite.

    Attributes:
        report: The human-readable report (also ``str(error)``).
        failures: One JSON-safe dict per failed expectation.
    """

    def __init__(self, report: str, failures: list[dict[str, Any]] | None = None) -> None:
        super().__init__(report)
        self.report = report
        self.failures = failures or []


class _Plan(NamedTuple):
    """Where each of the suite's expectations runs (positions in the suite)."""

    table: list[int]  # once, on the footer's row count and columns
    rows: list[int]  # on every batch
    key: list[str]  # the columns every uniqueness expectation compares


def validate_ratings(
    path: str | Path,
    *,
    rating_min: float,
    rating_max: float,
    min_rows: int = 1,
    suite_path: str | Path | None = None,
    batch_rows: int = BATCH_ROWS,
    log: Callable[[str], None] = logger.info,
) -> dict[str, Any]:
    """Check a ratings Parquet file against the expectation suite, in bounded memory.

    Args:
        path: Parquet file with columns ``user_id``, ``item_id``, ``rating``
            (extra columns allowed); ids may be integers or strings.
        rating_min: Lowest allowed rating (inclusive).
        rating_max: Highest allowed rating (inclusive).
        min_rows: Fewest rows the file must have.
        suite_path: Suite JSON; defaults to ``include/expectations/ratings.json``.
        batch_rows: About how many rows GX validates at a time; memory grows
            with it, GX's fixed cost per batch shrinks.
        log: Where progress lines go (rows done / total, rate, ETA), at most
            one every 10 s and one at the end of each pass.

    Returns:
        A JSON-safe summary: ``success``, ``path``, ``suite``, ``n_rows``,
        ``expectations`` (how many ran), ``evaluated`` (their labels) and
        ``parameters``.

    Raises:
        ValueError: The configuration or the suite file is invalid, or the
            suite holds an expectation that cannot be checked batch by batch.
        RatingsValidationError: One or more expectations failed; the message
            lists each with its unexpected count and a few offending rows.
    """
    import pyarrow.parquet as pq

    params = _check_config(rating_min, rating_max, min_rows, batch_rows)
    if suite_path is None:
        from factorflow.paths import expectation_suite_path

        suite_path = expectation_suite_path("ratings.json")

    gx = import_gx()
    doc, suite = _load_suite(gx, Path(suite_path))
    plan = _plan(suite, Path(suite_path))
    columns, n_rows = _columns(path), pq.read_metadata(path).num_rows
    metrics = footer(n_rows, columns)
    outcomes = {i: Outcome.of(validate_on_footer(suite.expectations[i], params, metrics,
                                                 _RESULT_FORMAT)) for i in plan.table}
    settings = f"rating scale [{rating_min}, {rating_max}]; min_rows={min_rows}"
    # Types first, from the footer: row checks on a wrongly typed column would
    # judge values the fix (a cast) changes, so they wait for it.
    wrong_types = check_column_types(path, (doc.get("meta") or {}).get("column_types", {}))
    if not wrong_types:
        runner = SuiteRunner(gx, doc, params, _RESULT_FORMAT)
        outcomes.update(_row_outcomes(runner, plan, path, columns, n_rows, batch_rows, log))
    results = [outcomes[i] for i in sorted(outcomes)]  # suite order: reports read top-down
    failures = [describe_failure(r, columns) for r in results if not r.success]
    if wrong_types:
        raise _failed(path, wrong_types + failures, len(results), n_rows, suite.name, settings,
                      not_run=len(plan.rows))
    if failures:
        raise _failed(path, failures, len(results), n_rows, suite.name, settings)
    return {
        "success": True,
        "path": str(path),
        "suite": suite.name,
        "n_rows": n_rows,
        "expectations": len(results),
        "evaluated": [label(r.expectation_config) for r in results],
        "parameters": params,
    }


def _failed(path: str | Path, failures: list[dict[str, Any]], n_results: int, n_rows: int,
            suite_name: str, settings: str, not_run: int = 0) -> RatingsValidationError:
    """The error that lists every failure (wrong types first) under one header line."""
    types = [f["columns"][0] for f in failures if f["expectation"] == "column_type"]
    counts = f"{len(failures) - len(types)} of {n_results} expectations failed"
    if types:
        counts = (f"wrong type in column(s) {', '.join(types)}, so the {not_run} row-level "
                  f"expectations were not run; {len(failures) - len(types)} of the other "
                  f"{n_results} failed")
    header = (f"ratings validation failed for {path}: {counts} "
              f"({n_rows} row(s); suite '{suite_name}'; {settings})")
    return RatingsValidationError(
        "\n".join([header, *(f["text"] for f in failures)]),
        [{k: v for k, v in f.items() if k != "text"} for f in failures],
    )


def _check_config(rating_min: float, rating_max: float, min_rows: int,
                  batch_rows: int) -> dict[str, Any]:
    """The suite's parameters, once the arguments are checked."""
    def is_real(x: Any) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    if not (is_real(rating_min) and is_real(rating_max)) or not rating_min < rating_max:
        raise ValueError(
            f"rating scale must be finite numbers with rating_min < rating_max, "
            f"got [{rating_min!r}, {rating_max!r}]"
        )
    if not isinstance(min_rows, numbers.Integral) or isinstance(min_rows, bool) or min_rows < 0:
        raise ValueError(f"min_rows must be an integer >= 0, got {min_rows!r}")
    if not isinstance(batch_rows, numbers.Integral) or isinstance(batch_rows, bool) \
            or batch_rows < 1:
        raise ValueError(f"batch_rows must be an integer >= 1, got {batch_rows!r}")
    return {
        "rating_min": float(rating_min),
        "rating_max": float(rating_max),
        "min_rows": int(min_rows),
    }


def _load_suite(gx: Any, suite_path: Path) -> tuple[dict[str, Any], Any]:
    """The suite's JSON and GX's suite built from it."""
    try:
        doc = json.loads(suite_path.read_text())
        suite = gx.ExpectationSuite(**doc)
    except Exception as exc:  # JSON, unknown keys, pydantic errors in kwargs
        raise ValueError(f"invalid expectation suite {suite_path}: {exc}") from exc
    # GX logs and *drops* expectations whose type it does not know; a suite
    # that silently checks less than it says is worse than no suite.
    if len(suite.expectations) != len(doc.get("expectations", [])):
        raise ValueError(
            f"invalid expectation suite {suite_path}: GX could build only "
            f"{len(suite.expectations)} of {len(doc.get('expectations', []))} expectations "
            "(unknown 'type'? see the great_expectations log)"
        )
    return doc, suite


def _plan(suite: Any, suite_path: Path) -> _Plan:
    """Sort the suite's expectations by where they run; refuse what batches cannot answer."""
    from great_expectations.expectations.expectation import (
        ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)

    plan = _Plan([], [], [])
    keys = []
    for i, expectation in enumerate(suite.expectations):
        etype = expectation.expectation_type
        if etype not in UNBATCHABLE_EXPECTATIONS and isinstance(expectation, (
                ColumnMapExpectation, ColumnPairMapExpectation, MulticolumnMapExpectation)):
            plan.rows.append(i)
            if etype in UNIQUENESS_EXPECTATIONS:
                keys.append(columns_of(expectation.configuration.kwargs))
        elif metric_names(expectation, _RESULT_FORMAT) <= FOOTER_METRICS:
            plan.table.append(i)
        else:
            raise ValueError(
                f"expectation suite {suite_path}: {etype} (expectation {i + 1}) cannot be "
                "checked in bounded memory; supported are row-level (map) expectations and "
                "table-level ones on the row count and columns")
    shared = [c for c in (keys[0] if keys else []) if all(c in k for k in keys)]
    if keys and not shared:
        raise ValueError(f"expectation suite {suite_path}: uniqueness expectations must "
                         f"share a column (rows with equal ones are checked together), got {keys}")
    return plan._replace(key=shared)


def _row_outcomes(runner: SuiteRunner, plan: _Plan, path: str | Path, columns: list[str],
                  n_rows: int, batch_rows: int, log: Callable[[str], None]) -> dict[int, Outcome]:
    """The row-level expectations' outcomes on the whole table, one hash part at a time."""
    if not plan.rows:
        return {}
    validate = runner.group("rows", plan.rows)
    cols = {i: columns_of(runner.doc["expectations"][i].get("kwargs", {})) for i in plan.rows}
    tallies = {i: MapTally(limit=_PARTIAL_UNEXPECTED_COUNT, shown=MAX_EXAMPLES,
                           describe_row=functools.partial(row_values, cols=cols[i]))
               for i in plan.rows}
    wanted = dict.fromkeys([*ID_COLUMNS, "rating", *(c for i in plan.rows for c in cols[i])])
    with scratch_dir(_scratch(path), ".factorflow-validate-") as tmp:
        files = partition_parquet(
            path, tmp, columns=[c for c in wanted if c in columns],
            key=[c for c in plan.key if c in columns], n_parts=max(1, -(-n_rows // batch_rows)),
            on_rows=Progress("validate: rows partitioned", n_rows, log).update)
        checked, done = Progress("validate: rows checked", n_rows, log), 0
        for file in files:
            frame = frame_of(read_part(file))
            file.unlink()  # the disk holds at most one copy of the table
            for i, res in validate(frame):
                tallies[i].add(res, frame)
            done += len(frame)
            checked.update(done)
    return {i: tally.outcome() for i, tally in tallies.items()}


def _columns(path: str | Path) -> list[str]:
    """The table's columns, from the footer (a pandas index stored as a column is not one)."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    index = (schema.pandas_metadata or {}).get("index_columns", [])
    return [name for name in schema.names if name not in index]


def _scratch(path: str | Path) -> str | None:
    """Beside the ratings (the artifacts' disk, not a RAM-backed /tmp) when writable."""
    folder = Path(path).resolve().parent
    return str(folder) if os.access(folder, os.W_OK) else None
