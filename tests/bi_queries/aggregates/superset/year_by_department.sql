-- Superset: stacked bars, COUNT(*) by year and department
-- source: apache/superset superset/db_engine_specs/postgres.py (time grain "P1Y": DATE_TRUNC('year', {col}))
-- expect: answered
-- protocol: simple

SELECT DATE_TRUNC('year', visit_date) AS visit_date, department AS department, COUNT(*) AS count 
FROM public.visits GROUP BY DATE_TRUNC('year', visit_date), department ORDER BY count DESC 
 LIMIT 10000
