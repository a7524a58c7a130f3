-- extract: the source table's rating columns, as they are.
-- {source} is a validated, quoted identifier (factorflow.identifiers.quote_table).
-- Only the known columns are kept; a missing required column is reported by the
-- validate stage's expectation suite, not here.
SELECT COLUMNS(lambda c: c IN ('user_id', 'item_id', 'rating', 'rated_at'))
FROM {source}
