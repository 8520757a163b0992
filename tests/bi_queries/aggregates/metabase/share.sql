-- Metabase: custom expression Share([Length Of Stay] > 2) by Department: a ratio of two aggregates
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:share -> :count-where divided by :count)
-- expect: answered

SELECT
  "public"."visits"."department" AS "department",
  SUM(
    CASE
      WHEN "public"."visits"."length_of_stay" > 2 THEN 1
      ELSE 0.0
    END
  ) / COUNT(*) AS "share"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
