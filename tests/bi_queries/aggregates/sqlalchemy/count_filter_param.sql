-- SQLAlchemy: func.count().filter(visits.c.department == "Emergency") beside func.count(): the FILTER's value is a bound parameter
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/elements.py (FunctionFilter: aggregate FILTER (WHERE ...)); lib/sqlalchemy/dialects/postgresql/psycopg.py (::VARCHAR bind casts)
-- expect: answered
-- params: ["Emergency"]

SELECT count(*) FILTER (WHERE visits.department = %s::VARCHAR) AS emergency, count(*) AS count_1 
FROM visits
