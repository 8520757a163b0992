-- Metabase: Standard deviation of Cost by Department (:stddev is STDDEV_POP)
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (sql.qp/->honeysql [:sql :stddev] -> :stddev_pop)
-- expect: answered
-- range: stddev 0 2500

SELECT
  "public"."visits"."department" AS "department",
  STDDEV_POP("public"."visits"."cost") AS "stddev"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
