-- Grafana: the visual query builder's output for AVG(cost) grouped by department, with its default LIMIT 50
-- source: grafana/grafana public/app/plugins/datasource/grafana-postgresql-datasource (SQL builder: aggregation aliased "AVG(cost)", LIMIT 50)
-- expect: answered

SELECT AVG(cost) AS "AVG(cost)", department FROM visits GROUP BY department LIMIT 50
