-- pandas: yearly counts with the year cast to int so that the DataFrame's index is an integer
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query sends the text as written, params through the driver)
-- expect: answered
-- keys: year
-- protocol: simple

SELECT extract(year FROM visit_date)::int AS year, count(*) AS visits, sum(cost)::float AS total_cost
FROM visits
GROUP BY 1
ORDER BY 1
