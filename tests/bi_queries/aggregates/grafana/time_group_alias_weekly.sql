-- Grafana: time series panel, "SELECT $__timeGroupAlias(visit_date, 7d), count(*) ... WHERE $__timeFilter(visit_date) GROUP BY 1 ORDER BY 1" as expanded for the dashboard's range
-- source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go (__timeGroup: floor(extract(epoch from col)/secs)*secs; __timeGroupAlias adds AS "time"; __timeFilter: col BETWEEN 'from' AND 'to' in RFC 3339)
-- expect: answered
-- keys: time

SELECT
  floor(extract(epoch from visit_date)/604800)*604800 AS "time",
  count(*) AS "visits"
FROM visits
WHERE
  visit_date BETWEEN '2025-01-01T00:00:00Z' AND '2025-12-31T23:59:59.999Z'
GROUP BY 1
ORDER BY 1
