-- SQLAlchemy 2 with psycopg 3: .where(visits.c.visit_date >= date(2024, 1, 1)): the parameter is cast ::DATE
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (render_bind_cast: parameters cast to their SQL type, e.g. %(x)s::DATE)
-- expect: answered
-- params: ["2024-01-01"]

SELECT visits.department, avg(visits.cost) AS avg_1 
FROM visits 
WHERE visits.visit_date >= %s::DATE GROUP BY visits.department
