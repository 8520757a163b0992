-- Looker: Visit Month (dimension_group timeframe month, a string YYYY-MM) and Total Cost (sum with COALESCE)
-- source: https://cloud.google.com/looker/docs/reference/param-field-dimension-group (month timeframe: TO_CHAR(DATE_TRUNC('month', ...), 'YYYY-MM')); https://cloud.google.com/looker/docs/reference/param-measure-types (sum)
-- expect: answered

SELECT
    TO_CHAR(DATE_TRUNC('month', visits.visit_date ), 'YYYY-MM') AS "visits.visit_month",
    COALESCE(SUM(visits.cost ), 0) AS "visits.total_cost"
FROM public.visits  AS visits
GROUP BY
    (DATE_TRUNC('month', visits.visit_date ))
ORDER BY
    1 DESC
LIMIT 500
