-- Superset: a virtual dataset joining visits to labs on the patient: each person's visits times their labs, refused by design (the join multiplies a person's rows)
-- source: apache/superset superset/models/helpers.py (get_sqla_query over a virtual dataset)
-- expect: refused 42501 multiplies
-- protocol: simple

SELECT test AS test, COUNT(*) AS count 
FROM (SELECT v.department, l.test, l.value
FROM visits v JOIN labs l ON l.patient_id = v.patient_id) AS virtual_table GROUP BY test ORDER BY count DESC 
 LIMIT 10000
