-- Metabase: Median of Length Of Stay by Department (:median is PERCENTILE_CONT(0.5) on PostgreSQL)
-- source: metabase/metabase src/metabase/driver/postgres.clj (sql.qp/->honeysql [:postgres :percentile] and :median)
-- expect: answered

SELECT
  "public"."visits"."department" AS "department",
  PERCENTILE_CONT(0.5) WITHIN GROUP (
    ORDER BY
      "public"."visits"."length_of_stay"
  ) AS "median"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
