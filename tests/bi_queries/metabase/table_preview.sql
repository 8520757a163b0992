-- Metabase: the first question on a synced table, as its query processor renders it (columns qualified by schema and table); a data table, so masked roles only
-- roles: clinician
-- min_rows: 10
SELECT "public"."patients"."patient_id" AS "patient_id", "public"."patients"."name" AS "name", "public"."patients"."ssn" AS "ssn", "public"."patients"."birth_date" AS "birth_date", "public"."patients"."zip" AS "zip" FROM "public"."patients" LIMIT 2000
