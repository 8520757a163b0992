-- Superset: AVG(value) by test and month over a time range on a timestamptz column (TO_TIMESTAMP literals)
-- source: apache/superset superset/db_engine_specs/postgres.py (convert_dttm for DateTime: TO_TIMESTAMP('...', 'YYYY-MM-DD HH24:MI:SS.US'); time grain "P1M")
-- expect: answered
-- keys: taken_at, test
-- protocol: simple

SELECT DATE_TRUNC('month', taken_at) AS taken_at, test AS test, AVG(value) AS "AVG(value)" 
FROM public.labs 
WHERE taken_at >= TO_TIMESTAMP('2024-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') AND taken_at < TO_TIMESTAMP('2026-01-01 00:00:00.000000', 'YYYY-MM-DD HH24:MI:SS.US') GROUP BY DATE_TRUNC('month', taken_at), test ORDER BY "AVG(value)" DESC 
 LIMIT 10000
