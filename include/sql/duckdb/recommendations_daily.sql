-- Materialize today's recommendations from the current model (run when a
-- publish updates the factorflow.current_predictions asset).
-- {schema} is a validated, quoted identifier.
CREATE OR REPLACE TABLE {schema}.recommendations_daily AS
SELECT current_date AS day, p.model_id, p.user_id, p.item_id, p.score, p.rank
FROM {schema}.current_predictions p
