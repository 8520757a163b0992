-- Metabase: Count of visits by Visit Date: Year, filter "Previous 5 years"
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:relative-datetime with :year unit)
-- expect: answered

SELECT
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) AS "visit_date",
  COUNT(*) AS "count"
FROM
  "public"."visits"
WHERE
  (
    "public"."visits"."visit_date" >= DATE_TRUNC('year', (NOW() + INTERVAL '-5 year'))
  )
  AND (
    "public"."visits"."visit_date" < DATE_TRUNC('year', NOW())
  )
GROUP BY
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  )
ORDER BY
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) ASC
