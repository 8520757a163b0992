-- Grafana: a table or stat panel whose time column is now(): a constant beside the aggregate
-- source: https://grafana.com/docs/grafana/latest/datasources/postgres/query-editor/ (table format; a time column named "time")
-- expect: answered
-- keys:

SELECT now() AS "time", count(*) AS "visits", avg(cost) AS "avg cost" FROM visits
