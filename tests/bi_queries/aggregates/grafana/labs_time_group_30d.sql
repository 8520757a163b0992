-- Grafana: "SELECT $__timeGroupAlias(taken_at, 30d), test AS metric, avg(value) ... WHERE $__timeFilter(taken_at)" on a timestamptz column, as expanded
-- source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go (__timeGroup: floor(extract(epoch from col)/2592000)*2592000; __timeFilter: BETWEEN RFC 3339 literals)
-- expect: answered
-- keys: time, metric

SELECT
  floor(extract(epoch from taken_at)/2592000)*2592000 AS "time",
  test AS metric,
  avg(value) AS value
FROM labs
WHERE
  taken_at BETWEEN '2024-01-01T00:00:00Z' AND '2025-12-31T23:59:59.999Z'
GROUP BY 1, 2
ORDER BY 1
