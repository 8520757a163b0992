-- Metabase: a native question with a {{department}} variable, sent through pgjdbc as a bound parameter
-- source: metabase/metabase src/metabase/driver/sql/parameters/substitute.clj (field filters and variables become ? parameters)
-- expect: answered
-- params: ["Cardiology"]

SELECT count(*) AS visits, avg(cost) AS avg_cost
FROM visits
WHERE department = %s
