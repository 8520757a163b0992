-- Superset: a chart on a virtual (SQL Lab) dataset: the dataset's SQL becomes the subquery "virtual_table"
-- source: apache/superset superset/models/helpers.py (get_sqla_query) (get_from_clause: alias "virtual_table")
-- expect: answered
-- protocol: simple

SELECT department AS department, count(*) AS count, AVG(cost) AS "AVG(cost)" 
FROM (SELECT v.department, v.cost, p.sex
FROM visits v JOIN patients p ON p.patient_id = v.patient_id) AS virtual_table GROUP BY department ORDER BY count DESC 
 LIMIT 10000
