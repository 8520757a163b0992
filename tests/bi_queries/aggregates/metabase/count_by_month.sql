-- Metabase: Count of visits by Visit Date: Month; a date column is truncated as a timestamp and cast back to date
-- source: metabase/metabase src/metabase/driver/postgres.clj (sql.qp/date [:postgres :month] -> date-trunc, h2x/->date for date columns)
-- expect: answered

SELECT
  CAST(
    DATE_TRUNC('month', "public"."visits"."visit_date") AS date
  ) AS "visit_date",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  CAST(
    DATE_TRUNC('month', "public"."visits"."visit_date") AS date
  )
ORDER BY
  CAST(
    DATE_TRUNC('month', "public"."visits"."visit_date") AS date
  ) ASC
