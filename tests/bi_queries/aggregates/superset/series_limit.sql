-- Superset: time series limited to the top 5 departments ("series limit"): an inner aggregate joined back
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (series limit subquery "series_limit", columns suffixed "__", metric "mme_inner__")
-- expect: refused 42501 ORDER
-- note: refused by design: a top-N join is two releases in one statement; the hint says to ask for the top keys first, then filter with IN
-- protocol: simple

SELECT DATE_TRUNC('year', visit_date) AS visit_date, department AS department, COUNT(*) AS count 
FROM public.visits JOIN (SELECT department AS department__, COUNT(*) AS mme_inner__ 
FROM public.visits GROUP BY department ORDER BY mme_inner__ DESC 
 LIMIT 5) AS series_limit ON department = department__ GROUP BY DATE_TRUNC('year', visit_date), department 
 LIMIT 10000
