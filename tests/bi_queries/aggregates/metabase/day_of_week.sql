-- Metabase: Count of visits by Visit Date: Day of week (Sunday = 1)
-- source: metabase/metabase src/metabase/driver/postgres.clj (sql.qp/date [:postgres :day-of-week]: EXTRACT(dow FROM x) + 1, as an integer)
-- expect: answered
-- keys: visit_date

SELECT
  CAST(EXTRACT(dow FROM "public"."visits"."visit_date") AS integer) + 1 AS "visit_date",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  CAST(EXTRACT(dow FROM "public"."visits"."visit_date") AS integer) + 1
ORDER BY
  CAST(EXTRACT(dow FROM "public"."visits"."visit_date") AS integer) + 1 ASC
