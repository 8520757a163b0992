-- Superset: Big Number, COUNT(*) with "No filter" time range
-- source: apache/superset superset/models/helpers.py (get_sqla_query)
-- expect: answered
-- protocol: simple

SELECT COUNT(*) AS count 
FROM public.visits 
 LIMIT 50000
