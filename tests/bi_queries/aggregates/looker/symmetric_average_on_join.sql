-- Looker: Patients Average Age by Visits Department in an Explore of patients joined one_to_many to visits: a measure of the "one" side across a fan-out, written as a symmetric aggregate (SUM DISTINCT of the value shifted by an md5 of the primary key, over a distinct count)
-- source: https://cloud.google.com/looker/docs/best-practices/understanding-symmetric-aggregates (the PostgreSQL form of a symmetric average)
-- expect: refused 42501 DISTINCT
-- note: refused by design: a distinct value counts once however many people hold it, so no per-person bound holds (the hint says to model the measure on its own table)

SELECT
    visits.department  AS "visits.department",
    ( COALESCE(CAST( ( SUM(DISTINCT (CAST(FLOOR(COALESCE( DATE_PART('year', AGE(patients.birth_date))  ,0)*(1000000*1.0)) AS DECIMAL(65,0))) + ('x' || MD5(patients.patient_id ::varchar))::bit(64)::bigint::DECIMAL(65,0)  *18446744073709551616 + ('x' || SUBSTR(MD5(patients.patient_id ::varchar),17))::bit(64)::bigint::DECIMAL(65,0) ) - SUM(DISTINCT ('x' || MD5(patients.patient_id ::varchar))::bit(64)::bigint::DECIMAL(65,0)  *18446744073709551616 + ('x' || SUBSTR(MD5(patients.patient_id ::varchar),17))::bit(64)::bigint::DECIMAL(65,0)) )  AS DOUBLE PRECISION) / CAST((1000000*1.0) AS DOUBLE PRECISION), 0) / NULLIF(COUNT(DISTINCT CASE WHEN  DATE_PART('year', AGE(patients.birth_date))   IS NOT NULL THEN  patients.patient_id  ELSE NULL END), 0)) AS "patients.average_age"
FROM public.patients  AS patients
LEFT JOIN public.visits  AS visits ON patients.patient_id = visits.patient_id
GROUP BY
    1
ORDER BY
    2 DESC
LIMIT 500
