-- pandas: pd.read_sql_table("visits", engine) selects every column of every row: row-level, refused by design
-- source: pandas-dev/pandas pandas/io/sql.py (SQLTable.read: select(table))
-- expect: refused 42501 row-level
-- protocol: simple

SELECT visits.visit_id, visits.patient_id, visits.visit_date, visits.diagnosis_code, visits.department, visits.cost, visits.length_of_stay 
FROM visits
