-- Metabase: Cumulative sum of Cost by Visit Date: Year (a window function over the aggregate, Metabase 0.50 and later)
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:cum-sum -> SUM(SUM(x)) OVER (ORDER BY breakouts ROWS UNBOUNDED PRECEDING))
-- expect: answered

SELECT
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) AS "visit_date",
  SUM(SUM("public"."visits"."cost")) OVER (
    ORDER BY
      CAST(
        DATE_TRUNC('year', "public"."visits"."visit_date") AS date
      ) ASC ROWS UNBOUNDED PRECEDING
  ) AS "sum"
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
