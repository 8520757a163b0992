-- Django: Visit.objects.filter(visit_date__gte=date(2024, 1, 1)).values("department").annotate(n=Count("visit_id")), psycopg 3 client-side binding (dates inlined with a cast)
-- source: django/django django/db/backends/postgresql/base.py (psycopg 3 ClientCursor unless server_side_binding)
-- expect: answered
-- protocol: simple

SELECT "visits"."department", COUNT("visits"."visit_id") AS "n" FROM "visits" WHERE "visits"."visit_date" >= '2024-01-01'::date GROUP BY "visits"."department"
