-- Superset: bar chart, AVG(length_of_stay) by week over 2025
-- source: apache/superset superset/db_engine_specs/postgres.py (time grain "P1W": DATE_TRUNC('week', {col}))
-- expect: answered
-- protocol: simple

SELECT DATE_TRUNC('week', visit_date) AS visit_date, AVG(length_of_stay) AS "AVG(length_of_stay)" 
FROM public.visits 
WHERE visit_date >= TO_DATE('2025-01-01', 'YYYY-MM-DD') AND visit_date < TO_DATE('2026-01-01', 'YYYY-MM-DD') GROUP BY DATE_TRUNC('week', visit_date) 
 LIMIT 10000
