-- Looker: filter "Visit Date is in the past 12 months" (complete months, relative to CURRENT_TIMESTAMP in the query time zone)
-- source: https://cloud.google.com/looker/docs/filter-expressions (relative date filters); https://cloud.google.com/looker/docs/reference/param-field-dimension-group
-- expect: answered

SELECT
    visits.department  AS "visits.department",
    COUNT(*) AS "visits.count"
FROM public.visits  AS visits
WHERE ((( visits.visit_date  ) >= ((DATE_TRUNC('month', DATE_TRUNC('day', CURRENT_TIMESTAMP AT TIME ZONE 'UTC')) + (-11 || ' month')::INTERVAL)) AND ( visits.visit_date  ) < ((DATE_TRUNC('month', DATE_TRUNC('day', CURRENT_TIMESTAMP AT TIME ZONE 'UTC')) + (-11 || ' month')::INTERVAL) + (12 || ' month')::INTERVAL)))
GROUP BY
    1
ORDER BY
    2 DESC
LIMIT 500
