-- SQLAlchemy: month = func.date_trunc("month", visits.c.visit_date).label("month"); grouped and ordered by the label; the string is a bound parameter
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (literals in func calls become bind parameters; group_by/order_by of a label render its name); sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (render_bind_cast: parameters cast to their SQL type, e.g. %(x)s::DATE)
-- expect: answered
-- params: ["month"]

SELECT date_trunc(%s::VARCHAR, visits.visit_date) AS month, count(visits.visit_id) AS count_1 
FROM visits GROUP BY month ORDER BY month
