-- pandas: patients by ten-year age band (age() of the birth date, relative to today)
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query sends the text as written, params through the driver)
-- expect: answered
-- keys: age_band
-- protocol: simple

SELECT floor(date_part('year', age(birth_date)) / 10) * 10 AS age_band, count(*) AS patients
FROM patients
GROUP BY 1
ORDER BY 1
