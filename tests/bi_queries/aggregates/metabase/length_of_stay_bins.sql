-- Metabase: Count by Length Of Stay, auto-binned (10 bins of width 5): FLOOR(((x - min) / width)) * width + min
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (binning: ->honeysql for :binning-strategy)
-- expect: answered
-- keys: length_of_stay

SELECT
  FLOOR((("public"."visits"."length_of_stay" - 0.0) / 5.0)) * 5.0 AS "length_of_stay",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  FLOOR((("public"."visits"."length_of_stay" - 0.0) / 5.0)) * 5.0
ORDER BY
  FLOOR((("public"."visits"."length_of_stay" - 0.0) / 5.0)) * 5.0 ASC
