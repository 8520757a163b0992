-- Django: the same filter with server_side_binding: the date is a bound parameter
-- source: django/django django/db/backends/postgresql/base.py (server_side_binding)
-- expect: answered
-- params: ["2024-01-01"]

SELECT "visits"."department", COUNT("visits"."visit_id") AS "n" FROM "visits" WHERE "visits"."visit_date" >= %s GROUP BY "visits"."department"
