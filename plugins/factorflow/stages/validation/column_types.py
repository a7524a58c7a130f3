"""The types of the columns the suite reads, checked before any row: a wrong one is a clear failure.

Great Expectations judges values, not types, and on a wrongly typed column it
either says something misleading (text ratings: "min_value and max_value must
be of the same type") or passes what downstream cannot use (booleans as
ratings, floats or dates as ids). So each column the suite reads has a list of
allowed kinds (the suite's ``meta.column_types``), checked on the Parquet
footer: free for a well-typed table.

Policy: a wrong type is rejected, never cast here, even when every value is a
number written as text. Validate only checks; the file it checked is the file
build reads, so a cast here would be a second, hidden parser whose rules
(whitespace, ``'1e3'``, ``'NaN'``, locales) the source does not see. One cast
in the source query is explicit, and costs nothing there.

Only for a rejected column is the file scanned (by DuckDB, streaming, in
bounded memory): how many values would not survive the cast the report
suggests, and the first rows, by row number in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from factorflow.stages.validation.report import ID_COLUMNS, MAX_EXAMPLES, format_example, plain

#: What a kind is called in a report, plural ("values that are not ...").
NOUNS = {"integer": "integers", "float": "floats", "decimal": "decimals", "text": "text",
         "boolean": "booleans", "timestamp": "timestamps", "date": "dates", "time": "times",
         "duration": "durations", "binary": "binary strings", "list": "lists",
         "struct": "structs", "map": "maps"}
#: (kinds allowed, kind found) -> (SQL type to cast to, what the values must be).
#: The scan counts the non-null values that this cast would not keep as they are.
CASTS = {
    ("number", "text"): ("DOUBLE", "numbers"),
    ("id", "float"): ("BIGINT", "whole numbers"),
    ("id", "decimal"): ("BIGINT", "whole numbers"),
    ("time", "text"): ("TIMESTAMP", "timestamps"),
}
#: What the values of a role must be ("dates are not ids").
ROLE_NOUNS = {"number": "numbers", "id": "ids", "time": "timestamps"}
# Scans run with a memory cap: DuckDB spills rather than grow with the table.
_MEMORY_LIMIT = "1GB"


def kind_of(arrow_type: Any) -> str:
    """The kind (``integer``, ``text``, ``list``, ...) of an Arrow type; its name if none fits."""
    import pyarrow.types as t

    if t.is_dictionary(arrow_type):  # pandas categoricals: judged by their values
        return kind_of(arrow_type.value_type)
    checks = [("null", t.is_null), ("boolean", t.is_boolean), ("integer", t.is_integer),
              ("float", t.is_floating), ("decimal", t.is_decimal), ("timestamp", t.is_timestamp),
              ("date", t.is_date), ("time", t.is_time), ("duration", t.is_duration),
              ("text", lambda x: t.is_string(x) or t.is_large_string(x)
               or getattr(t, "is_string_view", lambda _: False)(x)),
              ("binary", lambda x: t.is_binary(x) or t.is_large_binary(x)
               or t.is_fixed_size_binary(x)),
              ("list", lambda x: t.is_list(x) or t.is_large_list(x) or t.is_fixed_size_list(x)),
              ("struct", t.is_struct), ("map", t.is_map)]
    return next((kind for kind, test in checks if test(arrow_type)), str(arrow_type))


def check_column_types(path: str | Path, policy: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The columns of ``path`` whose type ``policy`` does not allow, as report failures.

    Args:
        path: the ratings Parquet file.
        policy: ``{column: {"role": "number" | "id" | "time", "kinds": [kind, ...]}}``
            (the suite's ``meta.column_types``); absent columns are not checked
            here (the suite's column check names them), nor are columns of
            nulls only (its not-null checks count them).

    Returns:
        One dict a wrongly typed column, shaped like
        :func:`factorflow.stages.validation.report.describe_failure`'s, with
        ``advice``; empty when every type is allowed.
    """
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    wrong = [(name, rule, kind_of(schema.field(name).type)) for name, rule in policy.items()
             if name in schema.names]
    wrong = [(name, rule, kind) for name, rule, kind in wrong
             if kind != "null" and kind not in rule["kinds"]]
    if not wrong:
        return []
    import duckdb

    with duckdb.connect(":memory:", config={"memory_limit": _MEMORY_LIMIT}) as con:
        # A relation, not SQL text: a view cannot take the path as a parameter.
        con.read_parquet(str(path), file_row_number=True).create_view("t")
        described = con.execute("SELECT column_name, column_type FROM (DESCRIBE t)").fetchall()
        sql_types = dict(described)
        return [_failure(con, name, rule, kind, sql_types[name], schema.names)
                for name, rule, kind in wrong]


def _failure(con: Any, column: str, rule: dict[str, Any], kind: str, sql_type: str,
             names: list[str]) -> dict[str, Any]:
    """The report entry of one wrongly typed column, from one streaming scan of it."""
    cast = CASTS.get((rule["role"], kind))
    col = '"' + column.replace('"', '""') + '"'
    # A value is bad if the suggested cast loses it (NULL, or a rounded id).
    bad = "TRUE" if cast is None else (
        f"TRY_CAST({col} AS {cast[0]}) IS NULL"
        + (f" OR TRY_CAST({col} AS {cast[0]}) <> {col}" if cast[0] == "BIGINT" else ""))
    (values, n_bad) = con.execute(
        f"SELECT count({col}), count(*) FILTER (WHERE {col} IS NOT NULL AND ({bad})) FROM t"
    ).fetchone()
    shown = [c for c in dict.fromkeys([*ID_COLUMNS, "rating", column]) if c in names]
    select = ", ".join('"' + c.replace('"', '""') + '"' for c in shown)
    # The first offending rows; where every value casts, the first rows as examples.
    where = f"{col} IS NOT NULL" + (f" AND ({bad})" if n_bad else "")
    rows = con.execute(f"SELECT file_row_number, {select} FROM t WHERE {where} "
                       f"ORDER BY file_row_number LIMIT {MAX_EXAMPLES}").fetchall()
    examples = [{"row": int(r[0]), **{c: plain(v) for c, v in zip(shown, r[1:])}} for r in rows]
    nouns = [NOUNS.get(k, k) for k in rule["kinds"]]
    allowed = " or ".join([", ".join(nouns[:-1]), nouns[-1]] if len(nouns) > 1 else nouns)
    if cast is None:
        detail = (f"{values} value(s), and {NOUNS.get(kind, kind)} are not "
                  f"{ROLE_NOUNS.get(rule['role'], 'allowed')}")
    elif n_bad:
        detail = f"{n_bad} of {values} values are not {cast[1]} ({100 * n_bad / values:.2f}%)"
    else:
        detail = f"all {values} values are {cast[1]} stored as {NOUNS.get(kind, kind)}"
    out = {"expectation": "column_type", "check": f"{column}_type", "columns": [column],
           "kwargs": {"kinds": list(rule["kinds"])}, "description": rule.get("description"),
           "unexpected_count": int(n_bad) if cast else int(values),
           "unexpected_percent": 100 * (n_bad if cast else values) / values if values else None,
           "observed_value": sql_type, "examples": examples, "error": None,
           "advice": _advice(column, rule, cast, n_bad)}
    lines = [f"- column {column} has type {sql_type} ({kind}); expected {allowed}: {detail}",
             *(f"    {format_example(e)}" for e in examples), f"    to do: {out['advice']}"]
    out["text"] = "\n".join(lines)
    return out


def _advice(column: str, rule: dict[str, Any], cast: tuple[str, str] | None, n_bad: int) -> str:
    """What to change in the source so that the column has an allowed type."""
    targets = [cast[0]] if cast else {"number": ["DOUBLE"], "id": ["BIGINT", "VARCHAR"],
                                      "time": ["TIMESTAMP"]}.get(rule["role"], ["<type>"])
    casts = " or ".join(f"CAST({column} AS {t})" for t in targets)
    text = (f"cast it in the source query, e.g. a view selecting {casts} AS {column}, "
            "as source_table")
    if cast and n_bad:
        text += f"; first fix or drop the {n_bad} row(s) that are not {cast[1]}"
    return text
