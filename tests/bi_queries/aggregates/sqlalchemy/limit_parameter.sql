-- SQLAlchemy: ... .order_by(func.count(visits.c.visit_id).desc()).limit(5): the limit is a bound parameter ($1)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s)
-- expect: answered
-- ranked: yes
-- params: [5]

SELECT visits.diagnosis_code, count(visits.visit_id) AS count_1 
FROM visits GROUP BY visits.diagnosis_code ORDER BY count(visits.visit_id) DESC 
 LIMIT %s
