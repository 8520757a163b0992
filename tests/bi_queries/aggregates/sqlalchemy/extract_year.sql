-- SQLAlchemy: extract("year", visits.c.visit_date) with a count
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (visit_extract: EXTRACT(year FROM ...))
-- expect: answered
-- keys: anon_1

SELECT EXTRACT(year FROM visits.visit_date) AS anon_1, count(visits.visit_id) AS count_1 
FROM visits GROUP BY EXTRACT(year FROM visits.visit_date)
