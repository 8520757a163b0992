-- Metabase: a question built on a saved question: the saved one becomes a "source" subquery
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (nested queries alias the source query "source")
-- expect: answered

SELECT
  "source"."department" AS "department",
  COUNT(*) AS "count",
  AVG("source"."cost") AS "avg"
FROM
  (
    SELECT
      "public"."visits"."visit_id" AS "visit_id",
      "public"."visits"."department" AS "department",
      "public"."visits"."cost" AS "cost"
    FROM
      "public"."visits"
    WHERE
      "public"."visits"."length_of_stay" > 0
  ) AS "source"
GROUP BY
  "source"."department"
ORDER BY
  "source"."department" ASC
