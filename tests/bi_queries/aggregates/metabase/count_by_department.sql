-- Metabase: Count of visits by Department (query builder); every column fully qualified and quoted
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (honeysql; ->honeysql of :field qualifies with schema and table)
-- expect: answered

SELECT
  "public"."visits"."department" AS "department",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
