-- Grafana: a panel whose range is written with now() instead of the macro ("last 5 years")
-- source: https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/ (raw SQL; users filter with now() - interval)
-- expect: answered

SELECT
  date_trunc('year', visit_date) AS time,
  avg(length_of_stay) AS "avg stay"
FROM visits
WHERE visit_date > now() - interval '5 years'
GROUP BY 1
ORDER BY 1
