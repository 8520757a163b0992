-- Superset: line chart, COUNT(*) by month over a time range; the time column keeps its name, dates via TO_DATE
-- source: apache/superset superset/db_engine_specs/postgres.py (_time_grain_expressions "P1M": DATE_TRUNC('month', {col}); convert_dttm for DATE: TO_DATE); apache/superset superset/models/helpers.py (get_sqla_query)
-- expect: answered
-- protocol: simple

SELECT DATE_TRUNC('month', visit_date) AS visit_date, COUNT(*) AS count 
FROM public.visits 
WHERE visit_date >= TO_DATE('2020-01-01', 'YYYY-MM-DD') AND visit_date < TO_DATE('2026-01-01', 'YYYY-MM-DD') GROUP BY DATE_TRUNC('month', visit_date) ORDER BY count DESC 
 LIMIT 10000
