-- Tableau: AVG(Length Of Stay) by Department: integers are averaged as DOUBLE PRECISION
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them)
-- expect: answered

SELECT "visits"."department" AS "department",
  AVG(CAST("visits"."length_of_stay" AS DOUBLE PRECISION)) AS "avg:length_of_stay:ok"
FROM "public"."visits" "visits"
GROUP BY 1
