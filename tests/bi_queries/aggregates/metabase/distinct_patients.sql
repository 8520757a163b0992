-- Metabase: Number of distinct values of Patient ID
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (:distinct aggregation, named "count")
-- expect: answered

SELECT
  COUNT(DISTINCT "public"."visits"."patient_id") AS "count"
FROM
  "public"."visits"
