-- Metabase: Count by Diagnosis Code, sorted by Count descending, row limit 10
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (order-by an aggregation reference -> ORDER BY "count" DESC; :limit)
-- expect: answered
-- ranked: yes

SELECT
  "public"."visits"."diagnosis_code" AS "diagnosis_code",
  COUNT(*) AS "count"
FROM
  "public"."visits"
GROUP BY
  "public"."visits"."diagnosis_code"
ORDER BY
  "count" DESC,
  "public"."visits"."diagnosis_code" ASC
LIMIT
  10
