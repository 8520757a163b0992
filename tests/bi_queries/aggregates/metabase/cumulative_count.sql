-- Metabase: Cumulative count of rows by Visit Date: Year
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:cum-count -> SUM(COUNT(*)) OVER (ORDER BY breakouts ROWS UNBOUNDED PRECEDING))
-- expect: answered

SELECT
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) AS "visit_date",
  SUM(COUNT(*)) OVER (
    ORDER BY
      CAST(
        DATE_TRUNC('year', "public"."visits"."visit_date") AS date
      ) ASC ROWS UNBOUNDED PRECEDING
  ) AS "count"
FROM
  "public"."visits"
GROUP BY
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  )
ORDER BY
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) ASC
