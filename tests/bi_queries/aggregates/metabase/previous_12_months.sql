-- Metabase: Count of visits, filter "Visit Date: Previous 12 months" (relative to NOW() in the report time zone)
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:relative-datetime -> NOW() + INTERVAL '-12 month', truncated to the month)
-- expect: answered

SELECT
  COUNT(*) AS "count"
FROM
  "public"."visits"
WHERE
  (
    "public"."visits"."visit_date" >= DATE_TRUNC('month', (NOW() + INTERVAL '-12 month'))
  )
  AND (
    "public"."visits"."visit_date" < DATE_TRUNC('month', NOW())
  )
