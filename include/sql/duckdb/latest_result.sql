-- The demo's closing query: the current model's validation RMSE next to the
-- bias-only baseline's, and the top recommendations of one user.
-- {schema} is a validated, quoted identifier; $user_id and $top_n are bound.

-- name: latest_model
SELECT model_id, dag_run_id, rank, epochs_run, valid_rmse, baseline_valid_rmse,
       valid_mae, fit_seconds, created_at
FROM {schema}.current_model

-- name: top_predictions
SELECT rank, item_id, round(score, 3) AS score
FROM {schema}.predictions
WHERE model_id = $model_id AND user_id = $user_id AND rank <= $top_n
ORDER BY rank

-- name: first_user
SELECT min(user_id) FROM {schema}.predictions WHERE model_id = $model_id

-- name: model_runs
-- Every kept model run (published models and sweep candidates), newest first.
-- peak_rss_mb is read through the row's JSON: a warehouse last published to
-- before the column existed (it is added at the next publish) still lists;
-- so are warm_start_from and parent_model_id.
SELECT r.model_id, r.created_at, r.dag_run_id, r.rank, r.loss, r.optimizer, r.epochs_run,
       r.valid_rmse, r.baseline_valid_rmse, r.fit_seconds, r.candidate_of,
       CAST(to_json(r)->>'warm_start_from' AS VARCHAR) AS warm_start_from,
       CAST(to_json(r)->>'parent_model_id' AS VARCHAR) AS parent_model_id,
       CAST(r.timings AS VARCHAR) AS timings,
       CAST(to_json(r)->'peak_rss_mb' AS VARCHAR) AS peak_rss_mb,
       r.model_id IN (SELECT model_id FROM {schema}.current_pointer) AS is_current
FROM {schema}.model_runs r
ORDER BY r.created_at DESC, r.candidate_of NULLS FIRST, r.model_id
LIMIT $limit

-- name: run_history
SELECT CAST(history AS VARCHAR) FROM {schema}.model_runs WHERE model_id = $model_id
