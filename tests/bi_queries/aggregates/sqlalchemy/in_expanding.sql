-- SQLAlchemy: .where(visits.c.department.in_([...])) renders one bound parameter per value ("expanding" IN)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (expanding bind parameters); sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (render_bind_cast: parameters cast to their SQL type, e.g. %(x)s::DATE)
-- expect: answered
-- groups: direct
-- params: ["Cardiology", "Surgery", "Emergency"]

SELECT visits.department, count(visits.visit_id) AS count_1 
FROM visits 
WHERE visits.department IN (%s::VARCHAR, %s::VARCHAR, %s::VARCHAR) GROUP BY visits.department
