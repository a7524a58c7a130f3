-- Publishing a trained model into a PostgreSQL warehouse.
-- {schema} is a validated, quoted identifier; {user_id_type}/{item_id_type} are
-- BIGINT or TEXT, chosen from the source ids. Every value is a bound parameter
-- (%(model_id)s ...). The statements run in one transaction, after
-- advisory_lock has serialized publishers of the same schema. Query names match
-- include/sql/duckdb/publish.sql; the insert_* queries COPY CSV in.

-- name: advisory_lock
SELECT pg_advisory_xact_lock(hashtextextended('factorflow.publish:' || %(schema)s, 0))

-- name: lock_holder
SELECT a.pid, a.usename, a.application_name, a.client_addr::text, a.state, a.query_start
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.granted
  AND (l.classid::bigint << 32) | l.objid::bigint
      = hashtextextended('factorflow.publish:' || %(schema)s, 0)
LIMIT 1

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema}

-- name: create_model_runs
CREATE TABLE IF NOT EXISTS {schema}.model_runs (
    model_id            TEXT PRIMARY KEY,
    dag_id              TEXT,
    dag_run_id          TEXT,
    source_table        TEXT,
    params              JSONB,
    n_users             INTEGER,
    n_items             INTEGER,
    n_ratings           BIGINT,
    n_train             BIGINT,
    n_valid             BIGINT,
    rank                INTEGER,
    loss                TEXT,
    optimizer           TEXT,
    epochs_run          INTEGER,
    best_epoch          INTEGER,
    train_rmse          DOUBLE PRECISION,
    train_mae           DOUBLE PRECISION,
    valid_rmse          DOUBLE PRECISION,
    valid_mae           DOUBLE PRECISION,
    baseline_valid_rmse DOUBLE PRECISION,
    baseline_valid_mae  DOUBLE PRECISION,
    fit_seconds         DOUBLE PRECISION,
    ratings_per_second  DOUBLE PRECISION,
    timings             JSONB,
    history             JSONB,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    global_mean         DOUBLE PRECISION,
    candidate_of        TEXT,
    peak_rss_mb         JSONB
)

-- name: migrate_model_runs
-- A sweep's candidates: rows with the published model's id here, no factors.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS candidate_of TEXT;
-- Stage -> peak RSS in MB (timings: stage -> seconds); NULL in earlier runs.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS peak_rss_mb JSONB;
-- Warm start and fold-in (NULL in earlier runs): the model this one started from, the
-- model a fold-in extends (its rows are copied), and the engine's settings (TrainConfig
-- and what a fold-in needs), so a published model can be loaded back as a FactorModel.
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS warm_start_from TEXT;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS parent_model_id TEXT;
ALTER TABLE {schema}.model_runs ADD COLUMN IF NOT EXISTS model_config JSONB

-- name: create_pointer
-- Which kept model the current_* views show: the newest publish, or a rollback.
CREATE TABLE IF NOT EXISTS {schema}.current_pointer (
    name     TEXT PRIMARY KEY,
    model_id TEXT NOT NULL
)

-- name: create_user_factors
CREATE TABLE IF NOT EXISTS {schema}.user_factors (
    model_id TEXT NOT NULL,
    user_id  {user_id_type} NOT NULL,
    bias     REAL NOT NULL,
    factors  REAL[] NOT NULL,
    PRIMARY KEY (model_id, user_id)
)

-- name: create_item_factors
-- n_ratings / mean_rating: the item's ratings in the model's training data.
CREATE TABLE IF NOT EXISTS {schema}.item_factors (
    model_id    TEXT NOT NULL,
    item_id     {item_id_type} NOT NULL,
    bias        REAL NOT NULL,
    factors     REAL[] NOT NULL,
    n_ratings   BIGINT,
    mean_rating DOUBLE PRECISION,
    PRIMARY KEY (model_id, item_id)
)

-- name: migrate_item_factors
-- Models published by an earlier factorflow keep NULL here (and drop out of
-- the cold-start lists when rolled back to).
ALTER TABLE {schema}.item_factors ADD COLUMN IF NOT EXISTS n_ratings BIGINT;
ALTER TABLE {schema}.item_factors ADD COLUMN IF NOT EXISTS mean_rating DOUBLE PRECISION

-- name: create_predictions
CREATE TABLE IF NOT EXISTS {schema}.predictions (
    model_id TEXT NOT NULL,
    user_id  {user_id_type} NOT NULL,
    item_id  {item_id_type} NOT NULL,
    score    REAL NOT NULL,
    rank     INTEGER NOT NULL,
    PRIMARY KEY (model_id, user_id, rank)
)

-- name: create_functions
-- Dot product and cosine similarity of two factor arrays, for downstream SQL.
CREATE OR REPLACE FUNCTION {schema}.factor_dot(a REAL[], b REAL[])
RETURNS DOUBLE PRECISION LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sum(x::float8 * y::float8) FROM unnest(a, b) AS t(x, y)
$$;
CREATE OR REPLACE FUNCTION {schema}.factor_cosine(a REAL[], b REAL[])
RETURNS DOUBLE PRECISION LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT sum(x::float8 * y::float8)
           / nullif(sqrt(sum(x::float8 * x::float8)) * sqrt(sum(y::float8 * y::float8)), 0)
    FROM unnest(a, b) AS t(x, y)
$$;

-- name: schema_state
-- Whether the tables have every migrated column, and whether every current_*
-- view exists: ALTER TABLE and CREATE OR REPLACE VIEW take ACCESS EXCLUSIVE
-- locks, which would queue behind (and then in front of) readers, so they run
-- only when needed.
SELECT (SELECT count(*) FROM information_schema.columns
        WHERE table_schema = %(schema)s
          AND ((table_name = 'model_runs'
                AND column_name IN ('candidate_of', 'peak_rss_mb', 'warm_start_from',
                                    'parent_model_id', 'model_config'))
               OR (table_name = 'item_factors'
                   AND column_name IN ('n_ratings', 'mean_rating')))) = 7,
       (SELECT count(*) FROM information_schema.views
        WHERE table_schema = %(schema)s
          AND table_name IN ('current_model', 'current_user_factors', 'current_item_factors',
                             'current_predictions', 'current_popular_items',
                             'current_top_rated_items')) = 6

-- name: column_type
SELECT upper(data_type) FROM information_schema.columns
WHERE table_schema = %(schema)s AND table_name = %(table)s AND column_name = %(column)s

-- name: delete_models
-- Every row of the models %(model_ids)s (a list), with their sweep candidates.
DELETE FROM {schema}.predictions WHERE model_id = ANY(%(model_ids)s);
DELETE FROM {schema}.user_factors WHERE model_id = ANY(%(model_ids)s);
DELETE FROM {schema}.item_factors WHERE model_id = ANY(%(model_ids)s);
DELETE FROM {schema}.model_runs WHERE model_id = ANY(%(model_ids)s)
                                  OR candidate_of = ANY(%(model_ids)s);

-- name: insert_user_factors
COPY {schema}.user_factors (model_id, user_id, bias, factors) FROM STDIN WITH (FORMAT csv, HEADER true)

-- name: insert_item_factors
COPY {schema}.item_factors (model_id, item_id, bias, factors, n_ratings, mean_rating) FROM STDIN WITH (FORMAT csv, HEADER true)

-- name: insert_predictions
COPY {schema}.predictions (model_id, user_id, item_id, score, rank) FROM STDIN WITH (FORMAT csv, HEADER true)

-- name: insert_model_run
INSERT INTO {schema}.model_runs (
    model_id, dag_id, dag_run_id, source_table, params, n_users, n_items,
    n_ratings, n_train, n_valid, rank, loss, optimizer, epochs_run, best_epoch, train_rmse,
    train_mae, valid_rmse, valid_mae, baseline_valid_rmse, baseline_valid_mae,
    fit_seconds, ratings_per_second, timings, history, global_mean, candidate_of, peak_rss_mb,
    warm_start_from, parent_model_id, model_config
) VALUES (
    %(model_id)s, %(dag_id)s, %(dag_run_id)s, %(source_table)s, %(params)s::jsonb, %(n_users)s,
    %(n_items)s, %(n_ratings)s, %(n_train)s, %(n_valid)s, %(rank)s, %(loss)s, %(optimizer)s,
    %(epochs_run)s, %(best_epoch)s, %(train_rmse)s, %(train_mae)s, %(valid_rmse)s, %(valid_mae)s,
    %(baseline_valid_rmse)s, %(baseline_valid_mae)s, %(fit_seconds)s, %(ratings_per_second)s,
    %(timings)s::jsonb, %(history)s::jsonb, %(global_mean)s, %(candidate_of)s,
    %(peak_rss_mb)s::jsonb, %(warm_start_from)s, %(parent_model_id)s, %(model_config)s::jsonb
)

-- name: point_current
INSERT INTO {schema}.current_pointer (name, model_id) VALUES ('current', %(model_id)s)
ON CONFLICT (name) DO UPDATE SET model_id = EXCLUDED.model_id

-- name: expired_models
-- Keep the newest %(keep)s models (and always the current one).
SELECT model_id FROM {schema}.model_runs
WHERE candidate_of IS NULL
  AND model_id NOT IN (SELECT model_id FROM {schema}.current_pointer)
  AND model_id NOT IN (SELECT model_id FROM {schema}.model_runs WHERE candidate_of IS NULL
                       ORDER BY created_at DESC, model_id DESC LIMIT %(keep)s)

-- name: create_views
-- The cold-start lists' columns changed (an earlier release's
-- current_popular_items ranked by item bias): CREATE OR REPLACE cannot rename.
DROP VIEW IF EXISTS {schema}.current_popular_items;
DROP VIEW IF EXISTS {schema}.current_top_rated_items;
CREATE OR REPLACE VIEW {schema}.current_model AS
SELECT r.* FROM {schema}.model_runs r JOIN {schema}.current_pointer p USING (model_id)
WHERE p.name = 'current';
CREATE OR REPLACE VIEW {schema}.current_user_factors AS
SELECT f.* FROM {schema}.user_factors f JOIN {schema}.current_pointer p
    ON p.model_id = f.model_id AND p.name = 'current';
CREATE OR REPLACE VIEW {schema}.current_item_factors AS
SELECT f.* FROM {schema}.item_factors f JOIN {schema}.current_pointer p
    ON p.model_id = f.model_id AND p.name = 'current';
CREATE OR REPLACE VIEW {schema}.current_predictions AS
SELECT f.* FROM {schema}.predictions f JOIN {schema}.current_pointer p
    ON p.model_id = f.model_id AND p.name = 'current';
-- Cold start, for a user without factors: two lists over the ratings the
-- current model was trained on (counted per item at publish). Most rated first:
-- score = n_ratings; ties by mean rating, then item_id.
CREATE VIEW {schema}.current_popular_items AS
SELECT row_number() OVER (ORDER BY f.n_ratings DESC, f.mean_rating DESC NULLS LAST,
                                   f.item_id)::integer AS rank,
       f.item_id, f.n_ratings AS score, f.n_ratings, f.mean_rating
FROM {schema}.current_item_factors f WHERE f.n_ratings IS NOT NULL;
-- Best rated first: the mean rating damped toward the global mean of the
-- training ratings by 10 ratings, as the bias-only baseline damps item biases:
-- score = (sum of ratings + 10 * global mean) / (n_ratings + 10), on the rating
-- scale; an item with few ratings stays near the global mean. Ties by n_ratings,
-- then item_id.
CREATE VIEW {schema}.current_top_rated_items AS
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
SELECT row_number() OVER (ORDER BY score DESC, n_ratings DESC, item_id)::integer AS rank,
       item_id, score, n_ratings, mean_rating
FROM damped

-- name: rollback
UPDATE {schema}.current_pointer SET model_id = %(model_id)s WHERE name = 'current'

-- name: model_exists
SELECT count(*) FROM {schema}.model_runs WHERE model_id = %(model_id)s AND candidate_of IS NULL

-- name: current_model_id
SELECT model_id FROM {schema}.current_pointer WHERE name = 'current'

-- name: copy_parent_rows
-- A fold-in's derived model: every row of the model it extends, under the new id.
-- Its own rows are inserted first, and win: the predictions are copied while
-- the new id holds only those rows, then the factors the parent alone has.
INSERT INTO {schema}.predictions (model_id, user_id, item_id, score, rank)
SELECT %(model_id)s, user_id, item_id, score, rank FROM {schema}.predictions p
WHERE p.model_id = %(parent)s AND NOT EXISTS (
    SELECT 1 FROM {schema}.user_factors n WHERE n.model_id = %(model_id)s AND n.user_id = p.user_id);
INSERT INTO {schema}.user_factors (model_id, user_id, bias, factors)
SELECT %(model_id)s, user_id, bias, factors FROM {schema}.user_factors p
WHERE p.model_id = %(parent)s AND NOT EXISTS (
    SELECT 1 FROM {schema}.user_factors n WHERE n.model_id = %(model_id)s AND n.user_id = p.user_id);
INSERT INTO {schema}.item_factors (model_id, item_id, bias, factors, n_ratings, mean_rating)
SELECT %(model_id)s, item_id, bias, factors, n_ratings, mean_rating FROM {schema}.item_factors p
WHERE p.model_id = %(parent)s AND NOT EXISTS (
    SELECT 1 FROM {schema}.item_factors n WHERE n.model_id = %(model_id)s AND n.item_id = p.item_id)
