-- Superset: pie chart with an adhoc filter "department IN (...)" and a metric of its own SQL
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (adhoc filters IN, custom SQL metric)
-- expect: answered
-- groups: direct
-- protocol: simple

SELECT department AS department, SUM(length_of_stay) AS "SUM(length_of_stay)" 
FROM public.visits 
WHERE department IN ('Cardiology', 'Emergency', 'Surgery', 'Primary Care') GROUP BY department ORDER BY "SUM(length_of_stay)" DESC 
 LIMIT 100
