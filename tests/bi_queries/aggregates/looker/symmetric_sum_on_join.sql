-- Looker: Total Cost by patient Sex across a one-to-many join, with symmetric aggregates (SUM DISTINCT of the value shifted by an md5 of the primary key)
-- source: https://cloud.google.com/looker/docs/best-practices/understanding-symmetric-aggregates (the PostgreSQL form of a symmetric sum)
-- expect: answered

SELECT
    patients.sex  AS "patients.sex",
    COALESCE(CAST( ( SUM(DISTINCT (CAST(FLOOR(COALESCE( visits.cost  ,0)*(1000000*1.0)) AS DECIMAL(65,0))) + ('x' || MD5(visits.visit_id ::varchar))::bit(64)::bigint::DECIMAL(65,0)  *18446744073709551616 + ('x' || SUBSTR(MD5(visits.visit_id ::varchar),17))::bit(64)::bigint::DECIMAL(65,0) ) - SUM(DISTINCT ('x' || MD5(visits.visit_id ::varchar))::bit(64)::bigint::DECIMAL(65,0)  *18446744073709551616 + ('x' || SUBSTR(MD5(visits.visit_id ::varchar),17))::bit(64)::bigint::DECIMAL(65,0)) )  AS DOUBLE PRECISION) / CAST((1000000*1.0) AS DOUBLE PRECISION), 0) AS "visits.total_cost"
FROM public.patients  AS patients
LEFT JOIN public.visits  AS visits ON patients.patient_id = visits.patient_id
GROUP BY
    1
ORDER BY
    2 DESC
LIMIT 500
