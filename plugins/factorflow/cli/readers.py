"""Rating files in, one tidy Polars frame out: ``user_id, item_id, rating[, timestamp]``.

Reads MovieLens files as distributed (100K ``u.data``/``u1.base``, latest
``ratings.csv``, 1M/10M ``ratings.dat``), generic CSV/TSV with or without a
header, and Parquet. Text files are read once as raw lines and split by Polars
itself, so a malformed file is reported by its line number and text, which
Polars' own CSV errors do not do reliably. Polars is imported inside the
functions so that the command line's parser (which lists :data:`FORMATS`)
stays cheap to build.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import polars as pl

FORMATS = ("auto", "csv", "tsv", "movielens-100k", "movielens-csv", "movielens-dat", "parquet")

# Accepted header names (compared case-insensitively), by output column.
COLUMN_NAMES = {
    "user_id": ("user_id", "userid", "user"),
    "item_id": ("item_id", "itemid", "movieid", "item"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "time", "ts"),
}
_REQUIRED = ("user_id", "item_id", "rating")
_ML100K_NAME = re.compile(r"u(\.data|[0-9a-z]\.(base|test))$")


class RatingsFileError(ValueError):
    """A ratings file that cannot be read; the message names the line."""


class _Layout(NamedTuple):
    separator: str
    header: bool | None  # None: decide from the first line
    field_counts: tuple[int, ...]  # allowed fields per line without a header


_LAYOUTS = {
    "csv": _Layout(",", None, (3, 4)),
    "tsv": _Layout("\t", None, (3, 4)),
    "movielens-100k": _Layout("\t", False, (4,)),
    "movielens-csv": _Layout(",", True, (4,)),
    "movielens-dat": _Layout("::", False, (4,)),
}


def read_ratings(path: str | Path, *, format: str = "auto") -> pl.DataFrame:
    """Read a ratings file.

    Args:
        path: the file.
        format: one of :data:`FORMATS`; ``"auto"`` picks by suffix and content
            (see :func:`detect_format`).

    Returns:
        Columns ``user_id`` (Int64 when every id is an integer, else String),
        ``item_id`` (likewise), ``rating`` (Float32) and, when the file has
        them, ``timestamp`` (Int64, null on lines without one).

    Raises:
        FileNotFoundError: no such file.
        RatingsFileError: empty or malformed file; the message gives the
            1-based line number (header included) and the line's text.
        ValueError: unknown ``format``.
    """
    path = Path(path)
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; known: {list(FORMATS)}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise RatingsFileError(f"{path}: not a regular file")
    if format == "auto":
        format = detect_format(path)
    if format == "parquet":
        return _read_parquet(path)
    return _read_text(path, _LAYOUTS[format])


def detect_format(path: str | Path) -> str:
    """The format ``read_ratings(format="auto")`` would use for ``path``."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return "parquet"
    first = _first_line(path)
    if first is None:
        raise RatingsFileError(f"{path}: file is empty")
    _, line = first
    if "::" in line:
        return "movielens-dat"
    if "\t" in line:
        fields = line.split("\t")
        # Only the MovieLens name *and* shape earns the strict layout; anything
        # else named u.data falls back to lenient TSV rather than failing.
        if _ML100K_NAME.search(path.name) and len(fields) == 4 and _is_number(fields[2]):
            return "movielens-100k"
        return "tsv"
    if line.replace(" ", "").lower().startswith("userid,movieid,rating"):
        return "movielens-csv"
    return "csv"


def _first_line(path: Path) -> tuple[int, str] | None:
    """``(1-based number, text)`` of the first non-blank line, or None."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if text.strip():
                return number, text
    return None


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(_clean(text)))
    except ValueError:
        return False


def _clean(text: str) -> str:
    return text.strip().strip('"').strip()


def _header_columns(fields: list[str]) -> dict[str, int]:
    """Output column -> field position for a header line (missing ones absent)."""
    lowered = [_clean(f).lower() for f in fields]
    found: dict[str, int] = {}
    for column, names in COLUMN_NAMES.items():
        for position, name in enumerate(lowered):
            if name in names:
                found[column] = position
                break
    return found


def _plan(path: Path, layout: _Layout) -> tuple[int | None, dict[str, int], tuple[int, ...]]:
    """``(header line number or None, column positions, allowed field counts)``."""
    first = _first_line(path)
    if first is None:
        raise RatingsFileError(f"{path}: file is empty")
    number, line = first
    fields = line.split(layout.separator)
    header = layout.header
    if header is None:
        # A header is a first line whose rating field is not a number.
        header = not (len(fields) >= 3 and _is_number(fields[2]))
        if header and len(fields) < 3:
            header = False  # too short to be a header: let the field count report it
    if not header:
        return None, {"user_id": 0, "item_id": 1, "rating": 2, "timestamp": 3}, layout.field_counts
    columns = _header_columns(fields)
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        accepted = "; ".join(f"{c}: {'/'.join(COLUMN_NAMES[c])}" for c in _REQUIRED)
        raise RatingsFileError(
            f"{path} line {number}: rating {_clean(fields[2])!r} is not a number, and the "
            f"line is no header either (it lacks {', '.join(missing)}; accepted names "
            f"{accepted}): {line!r}"
        )
    return number, columns, (len(fields),)


def _read_text(path: Path, layout: _Layout) -> pl.DataFrame:
    import polars as pl

    header_line, columns, counts = _plan(path, layout)

    def field(column: str) -> pl.Expr:
        if column not in columns:
            return pl.lit(None, pl.String)
        return pl.col("_fields").list.get(columns[column], null_on_oob=True).str.strip_chars(' "')

    # One raw line per row: NUL as "separator" never splits a text line, and
    # blank lines come back as null rows, so the row index is the line number.
    lines = pl.scan_csv(path, has_header=False, separator="\x00", quote_char=None,
                        schema={"_line": pl.String}, encoding="utf8-lossy")
    parsed = (
        lines.with_row_index("_line_no", offset=1)
        .filter(pl.col("_line").str.strip_chars().str.len_bytes() > 0)
        .filter(pl.col("_line_no") != (header_line or 0))
        .with_columns(pl.col("_line").str.split(layout.separator).alias("_fields"))
        .select(
            "_line_no", "_line",
            pl.col("_fields").list.len().alias("_n"),
            field("user_id").alias("user_id"),
            field("item_id").alias("item_id"),
            field("rating").alias("_rating_text"),
            field("timestamp").alias("_ts_text"),
        )
        .with_columns(
            pl.col("_rating_text").cast(pl.Float32, strict=False).alias("rating"),
            pl.col("_ts_text").cast(pl.Int64, strict=False).alias("timestamp"),
        )
    )
    try:
        df = parsed.collect()
    except pl.exceptions.PolarsError as exc:  # e.g. a NUL byte inside the file
        raise RatingsFileError(f"{path}: cannot be read as text lines: {exc}") from exc
    if df.height == 0:
        where = f" after the header on line {header_line}" if header_line else ""
        raise RatingsFileError(f"{path}: no ratings{where}")
    _check_lines(path, df, counts)

    out = df.select(_id_column(df["user_id"]), _id_column(df["item_id"]), "rating")
    # Keep timestamps only where the file has them, so 3-field files stay 3 columns.
    if "timestamp" in columns and (header_line or df["_n"].max() >= 4):
        out = out.with_columns(df["timestamp"])
    return out


def _check_lines(path: Path, df: pl.DataFrame, counts: tuple[int, ...]) -> None:
    """Raise for the first malformed line, naming its number and text."""
    import polars as pl

    rating = pl.col("rating")
    problems = [
        (~pl.col("_n").is_in(counts), None),
        ((pl.col("user_id") == "") | (pl.col("item_id") == ""), "empty user or item id"),
        (rating.is_null() | rating.is_nan() | rating.is_infinite(), "rating"),
        (pl.col("_ts_text").is_not_null() & (pl.col("_ts_text") != "")
         & pl.col("timestamp").is_null(), "timestamp"),
    ]
    bad = df.with_columns(
        pl.coalesce(
            *(pl.when(test).then(pl.lit(i)) for i, (test, _) in enumerate(problems))
        ).alias("_problem")
    ).filter(pl.col("_problem").is_not_null())
    if bad.height == 0:
        return
    row = bad.row(0, named=True)
    kind = problems[row["_problem"]][1]
    expected = " or ".join(str(c) for c in counts)
    if kind is None:
        what = f"expected {expected} fields, got {row['_n']}"
    elif kind == "rating":
        what = f"rating {row['_rating_text']!r} is not a finite number"
    elif kind == "timestamp":
        what = f"timestamp {row['_ts_text']!r} is not an integer"
    else:
        what = kind
    more = f" ({bad.height - 1} more malformed line(s) follow)" if bad.height > 1 else ""
    raise RatingsFileError(f"{path} line {row['_line_no']}: {what}: {row['_line']!r}{more}")


def _id_column(ids: pl.Series) -> pl.Series:
    """Integer ids when every id is an integer, the strings as given otherwise."""
    import polars as pl

    as_int = ids.cast(pl.Int64, strict=False)
    return as_int if as_int.null_count() == 0 else ids


def _read_parquet(path: Path) -> pl.DataFrame:
    import polars as pl

    try:
        lazy = pl.scan_parquet(path)
        schema = lazy.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise RatingsFileError(f"{path}: not a readable Parquet file: {exc}") from exc
    columns = _header_columns(list(schema.names()))
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise RatingsFileError(
            f"{path}: no column for {', '.join(missing)}; columns are {schema.names()}"
        )
    names = {c: schema.names()[p] for c, p in columns.items()}
    if not schema[names["rating"]].is_numeric():
        raise RatingsFileError(
            f"{path}: rating column {names['rating']!r} has type {schema[names['rating']]}, "
            "expected a number"
        )
    df = lazy.select(
        pl.col(names[c]).alias(c) for c in (*_REQUIRED, "timestamp") if c in names
    ).with_columns(pl.col("rating").cast(pl.Float32)).collect()
    if df.height == 0:
        raise RatingsFileError(f"{path}: no ratings")
    bad = df.with_row_index("_row", offset=1).filter(
        pl.any_horizontal(pl.col(_REQUIRED).is_null())
        | pl.col("rating").is_nan() | pl.col("rating").is_infinite()
    )
    if bad.height:
        row = bad.row(0, named=True)
        raise RatingsFileError(
            f"{path} row {row['_row']}: missing or non-finite value in "
            f"{ {c: row[c] for c in _REQUIRED} } ({bad.height} such row(s))"
        )
    return df
