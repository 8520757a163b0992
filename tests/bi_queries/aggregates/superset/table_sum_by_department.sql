-- Superset: table chart, SUM(cost) by department, sorted by the metric, row limit 10000
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (metrics labelled by their SQL, "ORDER BY <metric> DESC", row_limit)
-- expect: answered
-- protocol: simple

SELECT department AS department, sum(cost) AS "SUM(cost)" 
FROM public.visits GROUP BY department ORDER BY "SUM(cost)" DESC 
 LIMIT 10000
