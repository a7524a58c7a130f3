-- Materialize today's recommendations from the current model (PostgreSQL).
-- {schema} is a validated, quoted identifier. One transaction: readers see the
-- old table or the new one.
DROP TABLE IF EXISTS {schema}.recommendations_daily;
CREATE TABLE {schema}.recommendations_daily AS
SELECT current_date AS day, p.model_id, p.user_id, p.item_id, p.score, p.rank
FROM {schema}.current_predictions p
