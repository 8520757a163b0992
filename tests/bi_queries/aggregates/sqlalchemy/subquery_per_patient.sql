-- SQLAlchemy: visits per patient in a subquery, then averaged (.subquery() aliased anon_1): the per-person step a private query needs
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (anonymous subquery alias anon_1)
-- expect: answered

SELECT avg(anon_1.n) AS avg_1 
FROM (SELECT visits.patient_id AS patient_id, count(visits.visit_id) AS n 
FROM visits GROUP BY visits.patient_id) AS anon_1
