-- Looker: Visit Year (dimension_group timeframe year, an integer)
-- source: https://cloud.google.com/looker/docs/reference/param-field-dimension-group (year timeframe: EXTRACT(YEAR FROM ...)::integer)
-- expect: answered
-- keys: visits.visit_year

SELECT
    EXTRACT(YEAR FROM visits.visit_date )::integer AS "visits.visit_year",
    COUNT(*) AS "visits.count",
    AVG(visits.length_of_stay ) AS "visits.average_length_of_stay"
FROM public.visits  AS visits
GROUP BY
    1
ORDER BY
    1 DESC
LIMIT 500
