-- SQLAlchemy: ... .limit(10).offset(0) (a paginated grid's first page)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s)
-- expect: answered
-- ranked: yes
-- params: [10, 0]

SELECT visits.department, sum(visits.cost) AS sum_1 
FROM visits GROUP BY visits.department ORDER BY visits.department 
 LIMIT %s OFFSET %s
