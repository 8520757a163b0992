-- Looker: Explore of Visits, Department and Count, default row limit 500 written as FETCH NEXT
-- source: https://cloud.google.com/looker/docs/reference/param-explore-row-limit (row limit in the generated SQL)
-- expect: answered

SELECT
    visits.department  AS "visits.department",
    COUNT(*) AS "visits.count"
FROM public.visits  AS visits
GROUP BY
    1
ORDER BY
    2 DESC
FETCH NEXT 500 ROWS ONLY
