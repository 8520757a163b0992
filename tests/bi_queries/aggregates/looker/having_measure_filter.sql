-- Looker: a filter on a measure ("Visits Count > 100") becomes HAVING
-- source: https://cloud.google.com/looker/docs/filtering-and-limiting (filters on measures are applied in HAVING)
-- expect: answered
-- ranked: yes
-- note: HAVING tests noisy counts, so a group just under 100 may pass it

SELECT
    visits.department  AS "visits.department",
    COUNT(*) AS "visits.count"
FROM public.visits  AS visits
GROUP BY
    1
HAVING (COUNT(*)) > 100
ORDER BY
    2 DESC
LIMIT 500
