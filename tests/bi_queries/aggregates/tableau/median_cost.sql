-- Tableau: MEDIAN(Cost) by Department (PERCENTILE_CONT on PostgreSQL)
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them); https://help.tableau.com/current/pro/desktop/en-us/functions_functions_aggregate.htm (MEDIAN)
-- expect: answered

SELECT "visits"."department" AS "department",
  PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY "visits"."cost") AS "med:cost:ok"
FROM "public"."visits" "visits"
GROUP BY 1
