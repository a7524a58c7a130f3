-- The demo's closing query (PostgreSQL): the current model's validation RMSE
-- next to the bias-only baseline's, and the top recommendations of one user.

-- name: latest_model
SELECT model_id, dag_run_id, rank, epochs_run, valid_rmse, baseline_valid_rmse,
       valid_mae, fit_seconds, created_at
FROM {schema}.current_model

-- name: top_predictions
SELECT rank, item_id, round(score::numeric, 3)::float8 AS score
FROM {schema}.predictions
WHERE model_id = %(model_id)s AND user_id = %(user_id)s AND rank <= %(top_n)s
ORDER BY rank

-- name: first_user
SELECT min(user_id) FROM {schema}.predictions WHERE model_id = %(model_id)s

-- name: model_runs
-- Every kept model run (published models and sweep candidates), newest first.
-- peak_rss_mb is read through the row's JSON: a warehouse last published to
-- before the column existed (it is added at the next publish) still lists;
-- so are warm_start_from and parent_model_id.
SELECT r.model_id, r.created_at, r.dag_run_id, r.rank, r.loss, r.optimizer, r.epochs_run,
       r.valid_rmse, r.baseline_valid_rmse, r.fit_seconds, r.candidate_of,
       to_jsonb(r)->>'warm_start_from' AS warm_start_from,
       to_jsonb(r)->>'parent_model_id' AS parent_model_id,
       r.timings::text AS timings, (to_jsonb(r)->'peak_rss_mb')::text AS peak_rss_mb,
       r.model_id IN (SELECT model_id FROM {schema}.current_pointer) AS is_current
FROM {schema}.model_runs r
ORDER BY r.created_at DESC, r.candidate_of NULLS FIRST, r.model_id
LIMIT %(limit)s

-- name: run_history
SELECT CAST(history AS VARCHAR) FROM {schema}.model_runs WHERE model_id = %(model_id)s
