-- Grafana: stat panel, distinct patients in the dashboard's time range ($__timeFrom() and $__timeTo() expanded)
-- source: grafana/grafana pkg/tsdb/grafana-postgresql-datasource/macros.go (__timeFrom / __timeTo: quoted RFC 3339 timestamps)
-- expect: answered

SELECT count(DISTINCT patient_id) AS "patients"
FROM visits
WHERE visit_date >= '2023-01-01T00:00:00Z' AND visit_date <= '2025-12-31T23:59:59Z'
