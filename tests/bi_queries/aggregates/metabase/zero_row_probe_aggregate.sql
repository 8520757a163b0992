-- Metabase: the same LIMIT 0 metadata run of a saved native question that aggregates: no row is read, so nothing is released or charged
-- source: https://github.com/metabase/metabase/issues/50105 (native questions' metadata from a LIMIT 0 run)
-- expect: answered
-- charged: no

SELECT department, count(*) AS visits, avg(cost) AS avg_cost FROM visits GROUP BY department LIMIT 0
