-- Tableau: a custom SQL table's columns, discovered with a query that returns no row
-- source: https://help.tableau.com/current/pro/desktop/en-us/customsql.htm (Tableau wraps custom SQL in a subquery and reads its metadata)
-- expect: answered
-- charged: no

SELECT *
FROM (
  SELECT visit_id, department, visit_date, cost FROM visits
) "Custom SQL Query"
LIMIT 0
