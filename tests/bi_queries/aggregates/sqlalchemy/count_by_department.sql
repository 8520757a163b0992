-- SQLAlchemy: select(visits.c.department, func.count(visits.c.visit_id)).group_by(visits.c.department)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s)
-- expect: answered

SELECT visits.department, count(visits.visit_id) AS count_1 
FROM visits GROUP BY visits.department
