-- Metabase: a question on a summarized saved question, filtered on its Count and sorted: the outer query only post-processes the aggregate's rows
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (nested queries: the summarized source query becomes "source")
-- expect: answered
-- ranked: yes

SELECT
  "source"."department" AS "department",
  "source"."count" AS "count"
FROM
  (
    SELECT
      "public"."visits"."department" AS "department",
      COUNT(*) AS "count"
    FROM
      "public"."visits"
    GROUP BY
      "public"."visits"."department"
  ) AS "source"
WHERE
  "source"."count" > 100
ORDER BY
  "source"."count" DESC,
  "source"."department" ASC
LIMIT
  10
