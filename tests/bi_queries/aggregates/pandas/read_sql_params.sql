-- pandas: pd.read_sql(text("... WHERE visit_date >= :start ..."), conn, params={"start": "2022-01-01"}) through SQLAlchemy and psycopg
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query sends the text as written, params through the driver)
-- expect: answered
-- params: ["2022-01-01"]

SELECT date_trunc('month', visit_date)::date AS month, avg(cost) AS avg_cost
FROM visits
WHERE visit_date >= %s
GROUP BY 1
ORDER BY 1
