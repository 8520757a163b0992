-- Metabase: Sum of Cost by Department
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:sum aggregation, named "sum")
-- expect: answered

SELECT
  "public"."visits"."department" AS "department",
  SUM("public"."visits"."cost") AS "sum"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
