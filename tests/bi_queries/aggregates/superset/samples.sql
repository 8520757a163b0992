-- Superset: "View as table" / samples of the dataset: row-level, refused for aggregate roles by design
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (is_timeseries false, no metrics: raw columns with a row limit)
-- expect: refused 42501 row-level
-- protocol: simple

SELECT visit_id AS visit_id, patient_id AS patient_id, department AS department, cost AS cost 
FROM public.visits 
 LIMIT 10000
