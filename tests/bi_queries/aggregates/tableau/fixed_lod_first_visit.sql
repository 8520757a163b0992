-- Tableau: patients by the year of their first visit, a FIXED level-of-detail expression {FIXED [Patient Id] : MIN([Visit Date])}: a per-patient subquery joined back on the patient
-- source: https://help.tableau.com/current/pro/desktop/en-us/calculations_calculatedfields_lod_fixed.htm (FIXED LOD expressions are computed in a subquery and joined to the view's rows)
-- expect: answered
-- keys: yr:Calculation_first_visit:ok

SELECT CAST(EXTRACT(YEAR FROM "t0"."__measure__0") AS BIGINT) AS "yr:Calculation_first_visit:ok",
  COUNT(DISTINCT "visits"."patient_id") AS "ctd:patient_id:ok"
FROM "public"."visits" "visits"
  INNER JOIN (
  SELECT "visits"."patient_id" AS "patient_id",
    MIN("visits"."visit_date") AS "__measure__0"
  FROM "public"."visits" "visits"
  GROUP BY 1
) "t0" ON ("visits"."patient_id" IS NOT DISTINCT FROM "t0"."patient_id")
GROUP BY 1
