-- Publishing a trained model into the warehouse (DuckDB dialect).
-- {schema} is a validated, quoted identifier; {user_id_type}/{item_id_type} are
-- DuckDB type names chosen from the source ids (BIGINT or VARCHAR); {width} is
-- the current model's number of factor columns. Every value
-- is a bound parameter ($model_id ...). The statements run in one transaction.
-- Query names match include/sql/postgres/publish.sql; model_width is DuckDB's
-- own, advisory_lock, lock_holder, create_functions and schema_state Postgres's.

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_model_runs
CREATE TABLE IF NOT EXISTS {schema}.model_runs (
    model_id            VARCHAR PRIMARY KEY,
    dag_id              VARCHAR,
    dag_run_id          VARCHAR,
    source_table        VARCHAR,
    params              JSON,
    n_users             INTEGER,
    n_items             INTEGER,
    n_ratings           BIGINT,
    n_train             BIGINT,
    n_valid             BIGINT,
    rank                INTEGER,
    loss                VARCHAR,
    optimizer           VARCHAR,
    epochs_run          INTEGER,
    best_epoch          INTEGER,
    train_rmse          DOUBLE,
    train_mae           DOUBLE,
    valid_rmse          DOUBLE,
    valid_mae           DOUBLE,
    baseline_valid_rmse DOUBLE,
    baseline_valid_mae  DOUBLE,
    fit_seconds         DOUBLE,
    ratings_per_second  DOUBLE,
    timings             JSON,
    peak_rss_mb         JSON,
    history             JSON,
    created_at          TIMESTAMP
)

-- name: migrate_model_runs
-- Warehouses published to by an earlier factorflow lack these columns.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS loss VARCHAR;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS optimizer VARCHAR;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS global_mean DOUBLE;
-- A sweep's candidates: rows with the published model's id here, no factors.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS candidate_of VARCHAR;
-- Stage -> peak RSS in MB (timings: stage -> seconds); NULL in earlier runs.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS peak_rss_mb JSON;
-- Warm start and fold-in (NULL in earlier runs): the model this one started from, the
-- model a fold-in extends (its rows are copied), and the engine's settings (TrainConfig
-- and what a fold-in needs), so a published model can be loaded back as a FactorModel.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS warm_start_from VARCHAR;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS parent_model_id VARCHAR;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS model_config JSON;

-- name: create_pointer
-- Which kept model the current_* views show: the newest publish, or a rollback.
CREATE TABLE IF NOT EXISTS {schema}.current_pointer (
    name     VARCHAR PRIMARY KEY,
    model_id VARCHAR NOT NULL
)

-- name: create_user_factors
CREATE TABLE IF NOT EXISTS {schema}.user_factors (
    model_id VARCHAR NOT NULL,
    user_id  {user_id_type} NOT NULL,
    bias     FLOAT NOT NULL,
    factors  FLOAT[] NOT NULL
)

-- name: create_item_factors
-- n_ratings / mean_rating: the item's ratings in the model's training data.
CREATE TABLE IF NOT EXISTS {schema}.item_factors (
    model_id    VARCHAR NOT NULL,
    item_id     {item_id_type} NOT NULL,
    bias        FLOAT NOT NULL,
    factors     FLOAT[] NOT NULL,
    n_ratings   BIGINT,
    mean_rating DOUBLE
)

-- name: migrate_item_factors
-- Models published by an earlier factorflow keep NULL here (and drop out of
-- the cold-start lists when rolled back to).
ALTER TABLE {schema}.item_factors ADD COLUMN IF NOT EXISTS n_ratings BIGINT;
ALTER TABLE {schema}.item_factors ADD COLUMN IF NOT EXISTS mean_rating DOUBLE;

-- name: create_predictions
CREATE TABLE IF NOT EXISTS {schema}.predictions (
    model_id VARCHAR NOT NULL,
    user_id  {user_id_type} NOT NULL,
    item_id  {item_id_type} NOT NULL,
    score    FLOAT NOT NULL,
    rank     INTEGER NOT NULL
)

-- name: column_type
SELECT data_type FROM information_schema.columns
WHERE table_schema = $schema AND table_name = $table AND column_name = $column

-- name: delete_models
-- Every row of the models $model_ids (a list), with their sweep candidates.
DELETE FROM {schema}.predictions WHERE list_contains($model_ids, model_id);
DELETE FROM {schema}.user_factors WHERE list_contains($model_ids, model_id);
DELETE FROM {schema}.item_factors WHERE list_contains($model_ids, model_id);
DELETE FROM {schema}.model_runs WHERE list_contains($model_ids, model_id)
                                  OR list_contains($model_ids, candidate_of);

-- name: insert_user_factors
-- staged: the staged model's Arrow table, registered on the connection.
INSERT INTO {schema}.user_factors SELECT $model_id, id, bias, factors FROM staged

-- name: insert_item_factors
INSERT INTO {schema}.item_factors (model_id, item_id, bias, factors, n_ratings, mean_rating)
SELECT $model_id, id, bias, factors, n_ratings, mean_rating FROM staged

-- name: insert_predictions
INSERT INTO {schema}.predictions
SELECT $model_id, user_id, item_id, score, rank FROM staged

-- name: insert_model_run
INSERT INTO {schema}.model_runs BY NAME
SELECT * FROM (VALUES (
    $model_id, $dag_id, $dag_run_id, $source_table, $params::JSON, $n_users, $n_items,
    $n_ratings, $n_train, $n_valid, $rank, $loss, $optimizer, $epochs_run, $best_epoch, $train_rmse,
    $train_mae, $valid_rmse, $valid_mae, $baseline_valid_rmse, $baseline_valid_mae,
    $fit_seconds, $ratings_per_second, $timings::JSON, $peak_rss_mb::JSON, $history::JSON,
    $global_mean, $candidate_of, $warm_start_from, $parent_model_id, $model_config::JSON,
    now()::TIMESTAMP
)) AS run(model_id, dag_id, dag_run_id, source_table, params, n_users, n_items,
          n_ratings, n_train, n_valid, rank, loss, optimizer, epochs_run, best_epoch, train_rmse,
          train_mae, valid_rmse, valid_mae, baseline_valid_rmse, baseline_valid_mae,
          fit_seconds, ratings_per_second, timings, peak_rss_mb, history, global_mean,
          candidate_of, warm_start_from, parent_model_id, model_config, created_at)

-- name: point_current
INSERT OR REPLACE INTO {schema}.current_pointer VALUES ('current', $model_id)

-- name: expired_models
-- Keep the newest $keep models (and always the current one); delete_models
-- then deletes the rest, with their sweep candidates.
SELECT model_id FROM {schema}.model_runs
WHERE candidate_of IS NULL
  AND model_id NOT IN (SELECT model_id FROM {schema}.current_pointer)
  AND model_id NOT IN (SELECT model_id FROM {schema}.model_runs WHERE candidate_of IS NULL
                       ORDER BY created_at DESC, model_id DESC LIMIT $keep)

-- name: create_views
CREATE OR REPLACE VIEW {schema}.current_model AS
SELECT r.* FROM {schema}.model_runs r JOIN {schema}.current_pointer p USING (model_id)
WHERE p.name = 'current';
-- The current model's factors as fixed-size FLOAT[{width}] arrays (the tables
-- store FLOAT[] lists, since kept models may differ in width).
CREATE OR REPLACE VIEW {schema}.current_user_factors AS
SELECT f.model_id, f.user_id, f.bias, f.factors::FLOAT[{width}] AS factors
FROM {schema}.user_factors f JOIN {schema}.current_model USING (model_id);
CREATE OR REPLACE VIEW {schema}.current_item_factors AS
SELECT f.model_id, f.item_id, f.bias, f.factors::FLOAT[{width}] AS factors, f.n_ratings,
       f.mean_rating
FROM {schema}.item_factors f JOIN {schema}.current_model USING (model_id);
CREATE OR REPLACE VIEW {schema}.current_predictions AS
SELECT p.* FROM {schema}.predictions p JOIN {schema}.current_model USING (model_id);
-- Cold start, for a user without factors: two lists over the ratings the
-- current model was trained on (counted per item at publish). Most rated first:
-- score = n_ratings; ties by mean rating, then item_id.
CREATE OR REPLACE VIEW {schema}.current_popular_items AS
SELECT row_number() OVER (ORDER BY f.n_ratings DESC, f.mean_rating DESC NULLS LAST,
                                   f.item_id) AS rank,
       f.item_id, f.n_ratings AS score, f.n_ratings, f.mean_rating
FROM {schema}.current_item_factors f WHERE f.n_ratings IS NOT NULL;
-- Best rated first: the mean rating damped toward the global mean of the
-- training ratings by 10 ratings, as the bias-only baseline damps item biases:
-- score = (sum of ratings + 10 * global mean) / (n_ratings + 10), on the rating
-- scale; an item with few ratings stays near the global mean. Ties by n_ratings,
-- then item_id.
CREATE OR REPLACE VIEW {schema}.current_top_rated_items AS
WITH stats AS (
    SELECT f.item_id, f.n_ratings, f.mean_rating,
           coalesce(f.n_ratings * f.mean_rating, 0) AS rating_sum,
           sum(f.n_ratings * f.mean_rating) OVER () / sum(f.n_ratings) OVER () AS global_mean
    FROM {schema}.current_item_factors f WHERE f.n_ratings IS NOT NULL
), damped AS (
    SELECT item_id, n_ratings, mean_rating,
           (rating_sum + 10 * global_mean) / (n_ratings + 10) AS score
    FROM stats
)
SELECT row_number() OVER (ORDER BY score DESC, n_ratings DESC, item_id) AS rank,
       item_id, score, n_ratings, mean_rating
FROM damped

-- name: rollback
UPDATE {schema}.current_pointer SET model_id = $model_id WHERE name = 'current'

-- name: model_exists
SELECT count(*) FROM {schema}.model_runs WHERE model_id = $model_id AND candidate_of IS NULL

-- name: model_width
-- A kept model's factor width, for the views after a rollback (DuckDB only:
-- its views cast to fixed-size FLOAT[width] arrays).
SELECT len(factors) FROM {schema}.user_factors WHERE model_id = $model_id LIMIT 1


-- name: current_model_id
SELECT model_id FROM {schema}.current_pointer WHERE name = 'current'

-- name: copy_parent_rows
-- A fold-in's derived model: every row of the model it extends, under the new id.
-- Its own rows are inserted first, and win: the predictions are copied while
-- the new id holds only those rows, then the factors the parent alone has.
INSERT INTO {schema}.predictions (model_id, user_id, item_id, score, rank)
SELECT $model_id, user_id, item_id, score, rank FROM {schema}.predictions p
WHERE p.model_id = $parent AND NOT EXISTS (
    SELECT 1 FROM {schema}.user_factors n WHERE n.model_id = $model_id AND n.user_id = p.user_id);
INSERT INTO {schema}.user_factors (model_id, user_id, bias, factors)
SELECT $model_id, user_id, bias, factors FROM {schema}.user_factors p
WHERE p.model_id = $parent AND NOT EXISTS (
    SELECT 1 FROM {schema}.user_factors n WHERE n.model_id = $model_id AND n.user_id = p.user_id);
INSERT INTO {schema}.item_factors (model_id, item_id, bias, factors, n_ratings, mean_rating)
SELECT $model_id, item_id, bias, factors, n_ratings, mean_rating FROM {schema}.item_factors p
WHERE p.model_id = $parent AND NOT EXISTS (
    SELECT 1 FROM {schema}.item_factors n WHERE n.model_id = $model_id AND n.item_id = p.item_id)
