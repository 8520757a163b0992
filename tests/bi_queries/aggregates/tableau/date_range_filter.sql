-- Tableau: SUM(Cost) by Department with a range-of-dates filter on Visit Date
-- source: https://help.tableau.com/current/pro/desktop/en-us/perf_record_create_desktop.htm (the queries a workbook sends, as a performance recording shows them)
-- expect: answered

SELECT "visits"."department" AS "department",
  SUM("visits"."cost") AS "sum:cost:ok"
FROM "public"."visits" "visits"
WHERE (("visits"."visit_date" >= (DATE '2024-01-01')) AND ("visits"."visit_date" <= (DATE '2024-12-31')))
GROUP BY 1
