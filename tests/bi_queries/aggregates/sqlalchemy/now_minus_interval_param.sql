-- SQLAlchemy: .where(visits.c.visit_date >= func.now() - timedelta(days=1095)): the interval is a bound parameter cast ::INTERVAL
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/dialects/postgresql/psycopg.py (render_bind_cast for INTERVAL)
-- expect: answered
-- params: ["1095 days"]

SELECT visits.department, count(visits.visit_id) AS count_1 
FROM visits 
WHERE visits.visit_date >= now() - %s::INTERVAL GROUP BY visits.department
