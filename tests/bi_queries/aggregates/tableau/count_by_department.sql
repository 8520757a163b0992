-- Tableau: Number of Records by Department: SUM(1) named "cnt:<table>_<id>:ok"
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them)
-- expect: answered

SELECT "visits"."department" AS "department",
  SUM(1) AS "cnt:visits_4F3B2A1C9D8E4B7A:ok"
FROM "public"."visits" "visits"
GROUP BY 1
