"""SQL identifiers that come from params or config: validated, then quoted.

Values always travel as bound parameters; identifiers cannot, so any table or
schema name a user can set must match a strict pattern before it reaches SQL.
"""

from __future__ import annotations

import re

_PART_TEXT = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_PART = re.compile(_PART_TEXT)

#: JSON-schema patterns of the same rules, for trigger-form ``Param``s.
IDENTIFIER_PATTERN = rf"^{_PART_TEXT}$"
TABLE_PATTERN = rf"^{_PART_TEXT}(\.{_PART_TEXT})?$"


def quote_identifier(name: str) -> str:
    """``name`` checked against ``[A-Za-z_][A-Za-z0-9_]*`` and double-quoted.

    Raises:
        ValueError: naming the offending identifier, for anything else
            (quotes, spaces, semicolons, dots, non-ASCII letters, empty).
    """
    if not isinstance(name, str) or not _PART.fullmatch(name):
        raise ValueError(
            f"invalid SQL identifier {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore (at most 63 characters)"
        )
    return f'"{name}"'


def quote_table(name: str) -> str:
    """A ``table`` or ``schema.table`` name, each part validated and quoted."""
    parts = name.split(".") if isinstance(name, str) else [name]
    if len(parts) > 2:
        raise ValueError(f"invalid table name {name!r}: expected 'table' or 'schema.table'")
    return ".".join(quote_identifier(p) for p in parts)
