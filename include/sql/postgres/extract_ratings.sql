-- extract (PostgreSQL): the source table's rating columns, as they are.
-- {columns} are the known columns the table has (user_id, item_id, rating,
-- rated_at), each validated and quoted; {source} is a validated, quoted name.

-- name: columns
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = %(schema)s AND table_name = %(table)s
ORDER BY ordinal_position

-- name: select
COPY (SELECT {columns} FROM {source}) TO STDOUT WITH (FORMAT csv, HEADER true)
