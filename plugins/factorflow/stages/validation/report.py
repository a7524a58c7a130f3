"""The validate stage's report: each failed expectation as a JSON-safe dict and a few lines of text.

A failure names the expectation, how many of the table's rows broke it (and
what share), and a few offending rows by their row number in the table, with
the ids and rating a person needs to find them in the warehouse.
"""

from __future__ import annotations

import decimal
import math
from typing import Any, Collection

ID_COLUMNS = ("user_id", "item_id")
MAX_EXAMPLES = 5


def columns_of(kwargs: dict[str, Any]) -> list[str]:
    """The columns an expectation's kwargs name (``column`` or ``column_list``)."""
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list") or [])


def label(config: Any) -> str:
    """``expect_column_values_to_not_be_null(rating)``: the type and its columns."""
    cols = columns_of(config.kwargs)
    return f"{config.type}({', '.join(cols)})" if cols else config.type


def row_values(frame: Any, row: Any, cols: list[str]) -> dict[str, Any]:
    """The values a report shows for ``row`` of ``frame``: ids, rating and ``cols``."""
    shown = [c for c in dict.fromkeys([*ID_COLUMNS, "rating", *cols]) if c in frame.columns]
    # Cell by cell: a row Series would upcast integer ids to float.
    return {c: plain(frame.at[row, c]) for c in shown}


def describe_failure(res: Any, table_columns: Collection[str]) -> dict[str, Any]:
    """One failed expectation as a JSON-safe dict plus its report ``text``.

    Args:
        res: a :class:`factorflow.stages.validation.batch_results.Outcome`.
        table_columns: the columns of the validated table.
    """
    config = res.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    cols = columns_of(kwargs)
    r = res.result or {}
    out: dict[str, Any] = {
        "expectation": config.type,
        "check": (config.meta or {}).get("check"),
        "columns": cols,
        "kwargs": plain(kwargs),
        "description": config.description,
        "unexpected_count": r.get("unexpected_count"),
        "unexpected_percent": r.get("unexpected_percent_total", r.get("unexpected_percent")),
        "observed_value": plain(r.get("observed_value")),
        "examples": [],
        "error": None,
    }
    lines = [f"- {label(config)}" + (f" [{out['check']}]" if out["check"] else "")]
    detail = ""
    missing = [c for c in cols if c not in table_columns]
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
        out["examples"] = _examples(config.type, cols, r, res.rows)
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
    lines += [f"    {format_example(e)}" for e in out["examples"]]
    out["text"] = "\n".join(lines)
    return out


def _bounds(kwargs: dict[str, Any]) -> str:
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    if lo is not None and hi is not None:
        return f"; expected between {lo} and {hi}"
    if lo is not None or hi is not None:
        return f"; expected at least {lo}" if lo is not None else f"; expected at most {hi}"
    return ""


def _examples(etype: str, cols: list[str], r: dict[str, Any], rows: list[dict]) -> list[dict]:
    if etype == "expect_compound_columns_to_be_unique":
        # Distinct pairs; the count is exact only if GX returned every bad row.
        exact = r.get("unexpected_count") == len(r.get("partial_unexpected_list") or [])
        pairs = []
        for entry in (r.get("partial_unexpected_counts") or [])[:MAX_EXAMPLES]:
            pair = {"duplicate": dict(zip(cols, plain(list(entry["value"]))))}
            if exact:
                pair["rows"] = int(entry["count"])
            pairs.append(pair)
        return pairs
    if rows:
        return rows[:MAX_EXAMPLES]
    # GX gave no row indices: fall back to the bare values it did give.
    return [{"value": plain(v)} for v in (r.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]


def format_example(example: dict[str, Any]) -> str:
    """One example line: ``row 3: user_id=1, item_id=0, rating=7.5``, or a duplicated pair."""
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


def plain(value: Any) -> Any:
    """``value`` made JSON-safe: numpy scalars unwrapped, NA/NaN -> None, dates -> ISO."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, decimal.Decimal):  # DuckDB's DECIMAL, e.g. a rating written 3.0
        return plain(float(value)) if value.as_tuple().exponent != 0 else int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None  # np.float64 -> float
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalar
        return plain(value.item())
    import pandas as pd

    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
