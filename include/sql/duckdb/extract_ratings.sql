-- extract (DuckDB): the source's rating columns, as they are.
-- {source} is a validated, quoted table name, or read_parquet($path) /
-- read_csv($path) for a file source (the path is a bound parameter).
-- Only the known columns are kept; a missing required column is reported by the
-- validate stage's expectation suite, not here.

-- name: select
SELECT COLUMNS(lambda c: c IN ('user_id', 'item_id', 'rating', 'rated_at'))
FROM {source}
