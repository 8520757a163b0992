-- Metabase: Sum of Cost by Department, filter "Visit Date between 2024-01-01 and 2024-12-31"
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:between on a date column -> >= and < the next day, as timestamp literals)
-- expect: answered

SELECT
  "public"."visits"."department" AS "department",
  SUM("public"."visits"."cost") AS "sum"
FROM
  "public"."visits"
WHERE
  (
    "public"."visits"."visit_date" >= timestamp '2024-01-01 00:00:00.000'
  )
  AND (
    "public"."visits"."visit_date" < timestamp '2025-01-01 00:00:00.000'
  )
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
