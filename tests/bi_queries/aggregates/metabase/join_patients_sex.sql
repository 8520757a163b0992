-- Metabase: Count of visits by Patient -> Sex (implicit join through the foreign key, alias "Patients")
-- source: metabase/metabase src/metabase/driver/sql/query_processor.clj (joins alias the joined table by its display name; column alias "Patients__sex")
-- expect: answered

SELECT
  "Patients"."sex" AS "Patients__sex",
  COUNT(*) AS "count"
FROM
  "public"."visits"
  LEFT JOIN "public"."patients" AS "Patients" ON "public"."visits"."patient_id" = "Patients"."patient_id"
GROUP BY
  "Patients"."sex"
ORDER BY
  "Patients"."sex" ASC
