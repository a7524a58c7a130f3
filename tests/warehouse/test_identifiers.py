"""Identifier validation: the only way a param reaches SQL text."""

from __future__ import annotations

import pytest

from factorflow.warehouse.identifiers import quote_identifier, quote_table

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", ["factorflow", "_x1", "A" * 63])
def test_plain_names_are_quoted(name):
    assert quote_identifier(name) == f'"{name}"'


@pytest.mark.parametrize("name", ["x; DROP TABLE t", 'a"b', "a'b", "ünï", "1abc", "", "a b",
                                  "A" * 64, None, "a.b"])
def test_hostile_names_are_refused(name):
    with pytest.raises(ValueError, match="invalid SQL identifier"):
        quote_identifier(name)


def test_tables():
    assert quote_table("raw.ratings") == '"raw"."ratings"'
    assert quote_table("ratings") == '"ratings"'
    with pytest.raises(ValueError, match="schema.table"):
        quote_table("a.b.c")
