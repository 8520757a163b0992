-- pandas: the quartiles of cost by department for a box plot, in one query (percentile_cont of an array of fractions)
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query); https://www.postgresql.org/docs/current/functions-aggregate.html (percentile_cont(fractions double precision[]))
-- expect: refused 42501 literal fraction
-- note: refused by design: an array of fractions is several releases in one value; the hint says to write one percentile per column
-- keys: department
-- protocol: simple

SELECT department, percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY cost) AS quartiles
FROM visits
GROUP BY department
