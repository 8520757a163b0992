-- Tableau: COUNTD(Patient Id) by Department
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them)
-- expect: answered

SELECT "visits"."department" AS "department",
  COUNT(DISTINCT "visits"."patient_id") AS "ctd:patient_id:ok"
FROM "public"."visits" "visits"
GROUP BY 1
