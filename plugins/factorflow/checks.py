"""Validate: run the ratings expectation suite (Great Expectations 1.x) on a Parquet file.

The suite itself is data (``include/expectations/ratings.json``, GX's own
ExpectationSuite JSON); the rating scale and the minimum row count are suite
parameters (``{"$PARAMETER": ...}``) supplied here at run time, so one suite
serves every configuration.

``great_expectations`` (and pandas) are imported inside functions only: Airflow
imports this package while parsing DAG files, and importing GX takes seconds.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

ID_COLUMNS = ("user_id", "item_id")
MAX_EXAMPLES = 5
# GX returns at most this many offending values per expectation; more than we
# print, so that duplicates collapse to distinct pairs with an exact count.
_PARTIAL_UNEXPECTED_COUNT = 20


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


def validate_ratings(
    path: str | Path,
    *,
    rating_min: float,
    rating_max: float,
    min_rows: int = 1,
    suite_path: str | Path | None = None,
) -> dict[str, Any]:
    """Check a ratings Parquet file against the expectation suite.

    Args:
        path: Parquet file with columns ``user_id``, ``item_id``, ``rating``
            (extra columns allowed); ids may be integers or strings.
        rating_min: Lowest allowed rating (inclusive).
        rating_max: Highest allowed rating (inclusive).
        min_rows: Fewest rows the file must have.
        suite_path: Suite JSON; defaults to ``include/expectations/ratings.json``.

    Returns:
        A JSON-safe summary: ``success``, ``path``, ``suite``, ``n_rows``,
        ``expectations`` (how many ran), ``evaluated`` (their labels) and
        ``parameters``.

    Raises:
        ValueError: The configuration or the suite file is invalid.
        RatingsValidationError: One or more expectations failed; the message
            lists each with its unexpected count and a few offending rows.
    """
    params = _check_config(rating_min, rating_max, min_rows)
    if suite_path is None:
        from factorflow.paths import expectation_suite_path

        suite_path = expectation_suite_path("ratings.json")

    gx = _import_gx()
    suite = _load_suite(gx, Path(suite_path))
    df = _read_ratings(path)

    context = _ephemeral_context(gx)
    batch = (
        context.data_sources.add_pandas("factorflow")
        .add_dataframe_asset("ratings")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    # SUMMARY (not COMPLETE) so a badly broken file does not materialise every
    # bad value; without unexpected_index_column_names GX reports row indices,
    # which still work when an id column is the thing that is missing.
    result = batch.validate(
        suite,
        expectation_parameters=params,
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": _PARTIAL_UNEXPECTED_COUNT,
        },
    )

    # GX does not keep suite order in its results; restore it so reports read
    # top-down (columns, row count, nulls, range, duplicates).
    order = {_key(e.configuration): i for i, e in enumerate(suite.expectations)}
    results = sorted(result.results, key=lambda r: order.get(_key(r.expectation_config), 1 << 30))
    labels = [_label(r.expectation_config) for r in results]
    failures = [_describe_failure(r, df) for r in results if not r.success]
    if failures:
        header = (
            f"ratings validation failed for {path}: {len(failures)} of {len(results)} "
            f"expectations failed ({len(df)} row(s); suite '{suite.name}'; "
            f"rating scale [{rating_min}, {rating_max}]; min_rows={min_rows})"
        )
        raise RatingsValidationError(
            "\n".join([header, *(f["text"] for f in failures)]),
            [{k: v for k, v in f.items() if k != "text"} for f in failures],
        )
    return {
        "success": True,
        "path": str(path),
        "suite": suite.name,
        "n_rows": len(df),
        "expectations": len(results),
        "evaluated": labels,
        "parameters": params,
    }


def _check_config(rating_min: float, rating_max: float, min_rows: int) -> dict[str, Any]:
    def is_real(x: Any) -> bool:
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    if not (is_real(rating_min) and is_real(rating_max)) or not rating_min < rating_max:
        raise ValueError(
            f"rating scale must be finite numbers with rating_min < rating_max, "
            f"got [{rating_min!r}, {rating_max!r}]"
        )
    if not isinstance(min_rows, numbers.Integral) or isinstance(min_rows, bool) or min_rows < 0:
        raise ValueError(f"min_rows must be an integer >= 0, got {min_rows!r}")
    return {
        "rating_min": float(rating_min),
        "rating_max": float(rating_max),
        "min_rows": int(min_rows),
    }


def _import_gx() -> Any:
    # Before the import: GX logs dozens of INFO lines while importing. Only a
    # logger nobody configured is touched, so an explicit choice still wins.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def _ephemeral_context(gx: Any) -> Any:
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Progress bars default to on (tqdm "Calculating Metrics" on stderr, i.e.
    # in the task log); the temp docs site only logs a line and is never built.
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        analytics_enabled=False,
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _load_suite(gx: Any, suite_path: Path) -> Any:
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
    return suite


def _read_ratings(path: str | Path) -> pd.DataFrame:
    import pandas as pd

    # Nullable dtypes keep integer ids integral when some are null (no 3.0),
    # so reports show ids as the warehouse wrote them.
    df = pd.read_parquet(path, dtype_backend="numpy_nullable")
    return df.reset_index(drop=True)  # row numbers in reports = positions in the file


def _columns(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or [])


def _key(config: Any) -> tuple[str, tuple[str, ...]]:
    return config.type, tuple(_columns(config.kwargs))


def _label(config: Any) -> str:
    cols = _columns(config.kwargs)
    return f"{config.type}({', '.join(cols)})" if cols else config.type


def _describe_failure(res: Any, df: pd.DataFrame) -> dict[str, Any]:
    """One failed expectation as a JSON-safe dict plus its report ``text``."""
    config = res.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    cols = _columns(kwargs)
    r = res.result or {}
    out: dict[str, Any] = {
        "expectation": config.type,
        "check": (config.meta or {}).get("check"),
        "columns": cols,
        "kwargs": _plain(kwargs),
        "description": config.description,
        "unexpected_count": r.get("unexpected_count"),
        "unexpected_percent": r.get("unexpected_percent_total", r.get("unexpected_percent")),
        "observed_value": _plain(r.get("observed_value")),
        "examples": [],
        "error": None,
    }
    lines = [f"- {_label(config)}" + (f" [{out['check']}]" if out["check"] else "")]
    detail = ""
    missing = [c for c in cols if c not in df.columns]
    raised = _exception_messages(res.exception_info)
    if missing or raised:
        out["error"] = (
            f"not evaluated: missing column(s) {', '.join(missing)}"
            if missing
            else f"could not be evaluated: {raised[0]}"
        )
        detail = out["error"]
    elif out["unexpected_count"] is not None:
        pct = out["unexpected_percent"] or 0.0
        n_bad, n_all = out["unexpected_count"], r.get("element_count")
        detail = f"{n_bad} of {n_all} rows unexpected ({pct:.2f}%)"
        out["examples"] = _examples(config.type, cols, r, df)
    elif "mismatched" in (r.get("details") or {}):
        gone = r["details"]["mismatched"].get("missing", [])
        detail = f"missing column(s): {', '.join(gone)}; found: {', '.join(r['observed_value'])}"
        out["missing_columns"] = list(gone)
    elif "observed_value" in r:
        what = "row count" if "row_count" in config.type else "value"
        detail = f"observed {what} {r['observed_value']}" + _bounds(kwargs)
    lines[0] += f": {detail}" if detail else ""
    if config.description:
        lines.append(f"    rule: {config.description}")
    lines += [f"    {_format_example(e)}" for e in out["examples"]]
    out["text"] = "\n".join(lines)
    return out


def _bounds(kwargs: dict[str, Any]) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"; expected between {lo} and {hi}"
    if lo is not None or hi is not None:
        return f"; expected at least {lo}" if lo is not None else f"; expected at most {hi}"
    return ""


def _examples(etype: str, cols: list[str], r: dict[str, Any], df: pd.DataFrame) -> list[dict]:
    if etype == "expect_compound_columns_to_be_unique":
        # Distinct pairs; the count is exact only if GX returned every bad row.
        exact = r.get("unexpected_count") == len(r.get("partial_unexpected_list") or [])
        pairs = []
        for entry in (r.get("partial_unexpected_counts") or [])[:MAX_EXAMPLES]:
            pair = {"duplicate": dict(zip(cols, _plain(list(entry["value"]))))}
            if exact:
                pair["rows"] = int(entry["count"])
            pairs.append(pair)
        return pairs
    index = (r.get("partial_unexpected_index_list") or [])[:MAX_EXAMPLES]
    if index and all(isinstance(i, numbers.Integral) for i in index):
        shown = [c for c in dict.fromkeys([*ID_COLUMNS, "rating", *cols]) if c in df.columns]
        # Cell by cell: a row Series would upcast integer ids to float.
        return [{"row": int(i), **{c: _plain(df.at[i, c]) for c in shown}} for i in index]
    # GX gave no row indices: fall back to the bare values it did give.
    return [{"value": _plain(v)} for v in (r.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]


def _format_example(example: dict[str, Any]) -> str:
    if "duplicate" in example:
        pair = ", ".join(f"{k}={v!r}" for k, v in example["duplicate"].items())
        rows = f" ({example['rows']} rows)" if "rows" in example else ""
        return f"duplicated pair: {pair}{rows}"
    if "row" in example:
        rest = ", ".join(f"{k}={v!r}" for k, v in example.items() if k != "row")
        return f"row {example['row']}: {rest}"
    return f"value: {example['value']!r}"


def _exception_messages(info: Any) -> list[str]:
    # exception_info is either one flat dict or a dict of them keyed by metric id.
    if not isinstance(info, dict):
        return []
    entries = [info] if "raised_exception" in info else list(info.values())
    return [
        str(e.get("exception_message"))
        for e in entries
        if isinstance(e, dict) and (e.get("raised_exception") or e.get("exception_message"))
    ]


def _plain(value: Any) -> Any:
    """``value`` made JSON-safe: numpy scalars unwrapped, NA/NaN -> None, dates -> ISO."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # np.float64 -> float
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return _plain(value.item())
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
