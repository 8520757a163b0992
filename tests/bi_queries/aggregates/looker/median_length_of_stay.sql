-- Looker: a measure of type median on PostgreSQL
-- source: https://cloud.google.com/looker/docs/reference/param-measure-types (median: PERCENTILE_CONT(0.5) on dialects that support it)
-- expect: answered

SELECT
    visits.department  AS "visits.department",
    PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY visits.length_of_stay ) AS "visits.median_length_of_stay"
FROM public.visits  AS visits
GROUP BY
    1
ORDER BY
    1
LIMIT 500
