-- Metabase: opening the Visits table shows its first 2,000 rows: row-level, refused for aggregate roles by design
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (a query without aggregation; :limit 2000 from the default row limit)
-- expect: refused 42501 row-level

SELECT
  "public"."visits"."visit_id" AS "visit_id",
  "public"."visits"."patient_id" AS "patient_id",
  "public"."visits"."visit_date" AS "visit_date",
  "public"."visits"."department" AS "department",
  "public"."visits"."cost" AS "cost"
FROM
  "public"."visits"
LIMIT
  2000
