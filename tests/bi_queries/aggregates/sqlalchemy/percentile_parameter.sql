-- SQLAlchemy: func.percentile_cont(0.5).within_group(visits.c.length_of_stay): the fraction is a bound parameter
-- source: sqlalchemy/sqlalchemy lib/sqlalchemy/sql/compiler.py (anonymous labels count_1, LIMIT %(param_1)s) (WithinGroup; literal arguments become bind parameters)
-- expect: refused 42501 literal fraction
-- note: refused by design: the noise is planned before the Bind, so the fraction must be a literal (the hint names SQLAlchemy's literal_column)
-- params: [0.5]

SELECT percentile_cont(%s) WITHIN GROUP (ORDER BY visits.length_of_stay) AS anon_1 
FROM visits
