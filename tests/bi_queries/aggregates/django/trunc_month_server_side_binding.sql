-- Django: the same TruncMonth with psycopg 3 and OPTIONS {"server_side_binding": True}: the truncation unit is a bound parameter
-- source: django/django django/db/backends/postgresql/operations.py (date_trunc_sql returns "DATE_TRUNC(%s, ...)" with the unit as a parameter; GROUP BY 1, since $1 and $2 would be different expressions)
-- expect: answered
-- params: ["month"]

SELECT DATE_TRUNC(%s, "visits"."visit_date") AS "month", COUNT("visits"."visit_id") AS "n" FROM "visits" GROUP BY 1 ORDER BY 1 ASC
