-- The current model read back for a warm start or a fold-in, and the users it lacks.
-- {schema} and {source} are validated, quoted identifiers; $model_id is bound.
-- Columns added by later versions are read through the row's JSON, so a
-- warehouse published to by an earlier factorflow still reads (as NULL).

-- name: model_run
-- A kept model's row: model_id, or the current model when it is NULL.
SELECT r.model_id, r.global_mean, r.rank, r.loss, r.optimizer,
       CAST(r.params AS VARCHAR) AS params,
       CAST(to_json(r)->'model_config' AS VARCHAR) AS model_config,
       r.n_users, r.n_items
FROM {schema}.model_runs r
WHERE r.candidate_of IS NULL
  AND r.model_id = coalesce($model_id::VARCHAR, (SELECT model_id FROM {schema}.current_pointer
                                          WHERE name = 'current'))

-- name: user_rows
SELECT user_id, bias, factors FROM {schema}.user_factors WHERE model_id = $model_id

-- name: item_rows
SELECT item_id, bias, factors FROM {schema}.item_factors WHERE model_id = $model_id

-- name: new_users
-- The current model and how many users with ratings in the source table it lacks
-- (no row when nothing is published).
SELECT p.model_id,
       (SELECT count(DISTINCT s.user_id) FROM {source} s
        WHERE s.user_id IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM {schema}.user_factors f
                          WHERE f.model_id = p.model_id AND f.user_id = s.user_id)) AS n_new_users
FROM {schema}.current_pointer p
WHERE p.name = 'current'
