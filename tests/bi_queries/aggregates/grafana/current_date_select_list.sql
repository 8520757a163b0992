-- Grafana: a stat panel labelled with current_date
-- source: https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/
-- expect: answered
-- keys:

SELECT current_date AS "day", count(DISTINCT patient_id) AS "patients" FROM visits
