-- SQLAlchemy: select(func.count()).select_from(visits)
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (func.count() without argument renders count(*))
-- expect: answered

SELECT count(*) AS count_1 
FROM visits
