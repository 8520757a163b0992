-- Metabase: a native question's columns, discovered by running it with no rows (result metadata)
-- source: metabase/metabase src/metabase/query_processor/middleware/results_metadata.clj (native queries' metadata comes from a run; the probe is WHERE 1=0 / LIMIT 0)
-- expect: answered
-- charged: no

SELECT * FROM visits WHERE 1 = 0
