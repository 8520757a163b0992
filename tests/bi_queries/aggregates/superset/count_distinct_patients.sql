-- Superset: Big Number with the COUNT_DISTINCT(patient_id) metric
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (simple adhoc metric COUNT_DISTINCT -> COUNT(DISTINCT col))
-- expect: answered
-- protocol: simple

SELECT COUNT(DISTINCT patient_id) AS "COUNT_DISTINCT(patient_id)" 
FROM public.visits 
 LIMIT 50000
