-- SQLAlchemy 2 with psycopg 3: .where(visits.c.department == "Cardiology"): ::VARCHAR on the parameter
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (render_bind_cast: parameters cast to their SQL type, e.g. %(x)s::DATE)
-- expect: answered
-- params: ["Cardiology"]

SELECT count(*) AS count_1 
FROM visits 
WHERE visits.department = %s::VARCHAR
