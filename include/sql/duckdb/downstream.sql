-- Queries downstream users run against the published tables (DuckDB dialect).
-- {schema} is the publish schema; $values are bound parameters.

-- name: top_n_for_user
SELECT rank, item_id, score
FROM {schema}.current_predictions
WHERE user_id = $user_id AND rank <= $n
ORDER BY rank

-- name: score_pair
-- The current model's score for any (user, item) pair, in SQL: the model's own
-- prediction (mean + biases + dot product of the factors) clipped to the run's
-- rating scale, as the published top-N scores are (ranked unclipped, then
-- clipped). The scale is the run's rating_min / rating_max params; where the
-- run recorded none, LEAST/GREATEST skip the NULL and the score is unclipped.
SELECT LEAST(GREATEST(m.global_mean + u.bias + i.bias + list_dot_product(u.factors, i.factors),
                      TRY_CAST(m.params->>'rating_min' AS DOUBLE)),
             TRY_CAST(m.params->>'rating_max' AS DOUBLE)) AS score
FROM {schema}.current_model m
JOIN {schema}.current_user_factors u ON u.user_id = $user_id
JOIN {schema}.current_item_factors i ON i.item_id = $item_id

-- name: similar_items
SELECT b.item_id, list_cosine_similarity(a.factors, b.factors) AS similarity
FROM {schema}.current_item_factors a
JOIN {schema}.current_item_factors b ON b.item_id <> a.item_id
WHERE a.item_id = $item_id
ORDER BY similarity DESC, b.item_id
LIMIT $n

-- name: cold_start
-- For a user without factors (new since the model was trained): the most rated
-- items of the model's training data; score = number of ratings.
SELECT rank, item_id, score FROM {schema}.current_popular_items WHERE rank <= $n ORDER BY rank

-- name: cold_start_top_rated
-- The same user, the best rated items: score = mean rating damped toward the
-- global mean by 10 ratings, on the rating scale (see publish.sql).
SELECT rank, item_id, score FROM {schema}.current_top_rated_items WHERE rank <= $n ORDER BY rank
