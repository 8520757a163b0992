-- Grafana: $__timeEpoch with a daily $__timeGroup of summed cost over one quarter (most days hold few visits)
-- source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go (__timeGroup with 1d = 86400 seconds)
-- expect: answered
-- keys: time

SELECT
  floor(extract(epoch from visit_date)/86400)*86400 AS "time",
  sum(cost) AS "cost"
FROM visits
WHERE
  visit_date BETWEEN '2025-10-01T00:00:00Z' AND '2025-12-31T23:59:59.999Z'
GROUP BY 1
ORDER BY 1
