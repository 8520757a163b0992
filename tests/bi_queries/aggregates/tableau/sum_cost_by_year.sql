-- Tableau: SUM(Cost) by YEAR(Visit Date): the year as CAST(EXTRACT(YEAR ...) AS BIGINT)
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them); https://help.tableau.com/current/pro/desktop/en-us/functions_functions_date.htm (date parts)
-- expect: answered
-- keys: yr:visit_date:ok

SELECT CAST(EXTRACT(YEAR FROM "visits"."visit_date") AS BIGINT) AS "yr:visit_date:ok",
  SUM("visits"."cost") AS "sum:cost:ok"
FROM "public"."visits" "visits"
GROUP BY 1
