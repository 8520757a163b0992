-- Metabase: Average of Cost by Visit Date: Year
-- source: metabase/metabase src/metabase/driver/postgres.clj (sql.qp/date [:postgres :year])
-- expect: answered

SELECT
  CAST(
    DATE_TRUNC('year', "public"."visits"."visit_date") AS date
  ) AS "visit_date",
  AVG("public"."visits"."cost") AS "avg"
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
