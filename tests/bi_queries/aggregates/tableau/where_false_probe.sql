-- Tableau: the columns of a table, read with a predicate that is false by its literals alone (no row is read)
-- source: https://help.tableau.com/current/pro/desktop/en-us/customsql.htm (Tableau reads a relation's columns before it queries it); issue 10 of this project (zero-row probes)
-- expect: answered
-- charged: no

SELECT "visits"."visit_id" AS "visit_id",
  "visits"."department" AS "department",
  "visits"."cost" AS "cost"
FROM "public"."visits" "visits"
WHERE (1 = 0)
