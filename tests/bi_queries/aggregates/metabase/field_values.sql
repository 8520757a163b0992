-- Metabase: the distinct values of Department for a filter's drop-down (field values scan)
-- source: metabase/metabase src/metabase/db/metadata_queries.clj (field-distinct-values: breakout, limit 5000)
-- expect: answered

SELECT
  "public"."visits"."department" AS "department"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."department"
ORDER BY
  "public"."visits"."department" ASC
LIMIT
  5000
