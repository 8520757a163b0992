-- Looker: Patients Sex with Visits Count across the join (a count measure on a joined view is a COUNT(DISTINCT primary key))
-- source: https://cloud.google.com/looker/docs/best-practices/understanding-symmetric-aggregates (count measures across joins)
-- expect: answered

SELECT
    patients.sex  AS "patients.sex",
    COUNT(DISTINCT visits.visit_id ) AS "visits.count",
    COUNT(DISTINCT patients.patient_id ) AS "patients.count"
FROM public.visits  AS visits
LEFT JOIN public.patients  AS patients ON visits.patient_id = patients.patient_id
GROUP BY
    1
ORDER BY
    2 DESC
LIMIT 500
