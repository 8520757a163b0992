-- SQLAlchemy: func.avg(cast(visits.c.cost, Float)) (a float for the JSON API)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (visit_cast: CAST(... AS FLOAT))
-- expect: answered

SELECT visits.department, avg(CAST(visits.cost AS FLOAT)) AS avg_1 
FROM visits GROUP BY visits.department
