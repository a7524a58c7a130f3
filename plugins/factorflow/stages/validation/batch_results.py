"""One whole-table result per row-level expectation, from GX's results on many batches.

GX validates each part of a partitioned table (:mod:`factorflow.stages.validation.partitions`)
as one pandas batch whose index is the table's row numbers, its rows in table
order. A row-level (map) expectation's result on the whole table follows from
its results on the parts: the counts add up, and the table's first offending
rows are among each part's first offending rows, which GX lists. A
:class:`MapTally` keeps only those (at most ``limit``), so its memory does not
grow with the table, and rebuilds GX's SUMMARY result for the whole table.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Outcome:
    """An expectation's result on the whole table, shaped like GX's ExpectationValidationResult.

    Attributes:
        expectation_config: GX's configuration, parameters resolved.
        success: whether the expectation holds on the table.
        result: GX's result dict (for a map expectation, SUMMARY over the table).
        exception_info: GX's exception info when it could not evaluate, else None.
        rows: example offending rows, first rows of the table first: dicts with
            ``row`` (the table's row number) and the values a report shows.
    """

    expectation_config: Any
    success: bool
    result: dict[str, Any]
    exception_info: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, gx_result: Any) -> "Outcome":
        """The outcome GX itself gave (a table-level expectation, run once)."""
        return cls(gx_result.expectation_config, bool(gx_result.success),
                   dict(gx_result.result or {}), gx_result.exception_info)


class MapTally:
    """Adds up one map expectation's results over the batches of a table.

    Args:
        limit: offending values kept (GX's ``partial_unexpected_count``).
        shown: example rows kept.
        describe_row: ``(frame, row) -> dict`` of the values a report shows for
            a row of a batch, called for at most ``shown`` rows a batch.
    """

    def __init__(self, *, limit: int, shown: int,
                 describe_row: Callable[[Any, Any], dict[str, Any]]) -> None:
        self.limit, self.shown, self.describe_row = limit, shown, describe_row
        self.config: Any = None
        self.exception_info: Any = None
        self.counts = {"element_count": 0, "unexpected_count": 0, "missing_count": 0}
        self.tracks_missing = False
        self.partial: list[tuple[int, Any]] = []  # (row, value), lowest rows
        self.rows: list[dict[str, Any]] = []

    def add(self, gx_result: Any, frame: Any) -> None:
        """Fold in GX's result on one batch, ``frame`` (indexed by the table's row numbers)."""
        self.config = gx_result.expectation_config
        raised = _raised(gx_result)
        if raised or self.exception_info:
            self.exception_info = self.exception_info or raised
            return
        r = gx_result.result or {}
        for name in self.counts:
            self.counts[name] += int(r.get(name) or 0)
        self.tracks_missing = self.tracks_missing or "missing_count" in r
        index = r.get("partial_unexpected_index_list") or []
        values = r.get("partial_unexpected_list") or []
        self.partial = _lowest(self.partial, zip(index, values), self.limit)
        mine = [{"row": int(i), **self.describe_row(frame, i)} for i in index[: self.shown]]
        self.rows = heapq.nsmallest(self.shown, self.rows + mine, key=lambda e: e["row"])

    def outcome(self) -> Outcome:
        """The expectation's :class:`Outcome` on every row added so far."""
        if self.exception_info:
            return Outcome(self.config, False, {}, self.exception_info)
        total, bad = self.counts["element_count"], self.counts["unexpected_count"]
        considered = total - self.counts["missing_count"]
        # GX's rule (expectation._mostly_success): vacuously true on no rows.
        mostly = (self.config.kwargs or {}).get("mostly")
        mostly = 1.0 if mostly is None else mostly
        success = total == 0 or considered == 0 or (considered - bad) / considered >= mostly
        return Outcome(self.config, success, self._summary(), None, list(self.rows))

    def _summary(self) -> dict[str, Any]:
        """GX's SUMMARY result keys (expectation._format_map_output) for the whole table."""
        total, bad = self.counts["element_count"], self.counts["unexpected_count"]
        missing = self.counts["missing_count"]
        pct_total = bad / total * 100 if total else None
        pct_nonmissing = pct_total
        if self.tracks_missing:
            pct_nonmissing = bad / (total - missing) * 100 if total and total > missing else None
        out: dict[str, Any] = {
            "element_count": total,
            "unexpected_count": bad,
            "unexpected_percent": pct_nonmissing,
            "partial_unexpected_list": [v for _, v in self.partial],
        }
        if self.tracks_missing:
            out.update(missing_count=missing,
                       missing_percent=missing / total * 100 if total else None,
                       unexpected_percent_total=pct_total,
                       unexpected_percent_nonmissing=pct_nonmissing)
        counts = _value_counts(out["partial_unexpected_list"], self.limit)
        if counts is not None:
            out["partial_unexpected_counts"] = counts
        out["partial_unexpected_index_list"] = [i for i, _ in self.partial]
        return out


def _lowest(kept: list[tuple[int, Any]], new: Any, limit: int) -> list[tuple[int, Any]]:
    """The ``limit`` (row, value) pairs with the lowest rows of ``kept`` and ``new``."""
    return heapq.nsmallest(limit, [*kept, *((int(i), v) for i, v in new)], key=lambda p: p[0])


def _value_counts(values: list[Any], limit: int) -> list[dict[str, Any]] | None:
    """GX's ``partial_unexpected_counts`` of ``values``; None where GX gives none."""
    # Multicolumn values are dicts: counted as tuples of their values, as GX does.
    keys = [tuple(v.values()) if isinstance(v, dict) else v for v in values]
    try:
        top = sorted(Counter(keys).most_common(limit), key=lambda kv: (-kv[1], kv[0]))
    except TypeError:  # unorderable (e.g. None beside ints): GX leaves the key out
        return None
    return [{"value": value, "count": count} for value, count in top]


def _raised(gx_result: Any) -> Any:
    """GX's exception info if evaluating the expectation raised, else None."""
    info = gx_result.exception_info
    if not isinstance(info, dict):
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    return info if any(isinstance(e, dict) and e.get("raised_exception") for e in entries) else None
