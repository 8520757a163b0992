-- pandas: visits per patient, to be described with df.n.describe(): one group per person, refused by design
-- source: pandas-dev/pandas pandas/io/sql.py (read_sql_query sends the text as written, params through the driver)
-- expect: refused 42501 privacy unit
-- protocol: simple

SELECT patient_id, count(*) AS n FROM visits GROUP BY patient_id
