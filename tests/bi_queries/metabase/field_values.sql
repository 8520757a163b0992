-- Metabase: a category field's distinct values, scanned after sync for filter widgets (field-values), as its query processor renders it; a data table, so masked roles only
-- roles: clinician
-- min_rows: 2
-- contains: Cardiology
SELECT "public"."visits"."department" AS "department" FROM "public"."visits" GROUP BY "public"."visits"."department" ORDER BY "public"."visits"."department" ASC LIMIT 1000
