-- pandas: average cost as float8 so that the column is float64 rather than object (Decimal)
-- source: pandas-dev/pandas pandas/io/sql.py (numeric columns come back as Decimal objects; analysts cast)
-- expect: answered
-- protocol: simple

SELECT department, avg(cost::float) AS avg_cost, count(*) AS visits FROM visits GROUP BY department ORDER BY department
