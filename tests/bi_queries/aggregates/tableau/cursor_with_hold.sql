-- Tableau: through psqlODBC with UseDeclareFetch, every query is read through a holdable cursor
-- source: https://odbc.postgresql.org/docs/config.html (UseDeclareFetch, Fetch: "DECLARE ... CURSOR WITH HOLD FOR ...; FETCH n IN ...")
-- expect: answered
-- then: FETCH 2048 IN "SQL_CUR0x7f3a2c0041e0"
-- then: CLOSE "SQL_CUR0x7f3a2c0041e0"

DECLARE "SQL_CUR0x7f3a2c0041e0" CURSOR WITH HOLD FOR SELECT "visits"."department" AS "department",
  SUM(1) AS "cnt:visits_4F3B2A1C9D8E4B7A:ok",
  SUM("visits"."cost") AS "sum:cost:ok"
FROM "public"."visits" "visits"
GROUP BY 1
