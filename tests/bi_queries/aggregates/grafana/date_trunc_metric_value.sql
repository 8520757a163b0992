-- Grafana: time series by department with the metric/value columns Grafana pivots into series; $__timeFilter expanded
-- source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go; https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/ (time series: time, metric, value)
-- expect: answered
-- keys: time, metric

SELECT
  date_trunc('month', visit_date) AS time,
  department AS metric,
  count(*) AS value
FROM visits
WHERE
  visit_date BETWEEN '2024-01-01T00:00:00Z' AND '2025-12-31T23:59:59.999Z'
GROUP BY 1, 2
ORDER BY 1
