-- pandas: pd.read_sql("SELECT department, count(*) AS visits, avg(cost) AS avg_cost FROM visits GROUP BY department", engine)
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query sends the text as written, params through the driver)
-- expect: answered
-- protocol: simple

SELECT department, count(*) AS visits, avg(cost) AS avg_cost FROM visits GROUP BY department
