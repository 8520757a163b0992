-- Tableau: a worksheet over a Custom SQL data source: the custom SQL is a subquery named "Custom SQL Query"
-- source: https://help.tableau.com/current/pro/desktop/en-us/customsql.htm (custom SQL is wrapped as a subquery)
-- expect: answered

SELECT "Custom SQL Query"."department" AS "department",
  SUM(1) AS "cnt:Custom_SQL_Query_4F3B2A1C:ok",
  SUM("Custom SQL Query"."cost") AS "sum:cost:ok"
FROM (
  select * from visits where length_of_stay >= 0
) "Custom SQL Query"
GROUP BY 1
