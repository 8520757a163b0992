-- Django: .filter(visit_date__gte=timezone.now() - timedelta(days=3 * 365)) with client-side binding (an aware datetime inlined as timestamptz)
-- source: django/django django/db/backends/postgresql/base.py (psycopg 3 ClientCursor renders datetimes with ::timestamptz)
-- expect: answered
-- protocol: simple

SELECT "visits"."department", AVG("visits"."length_of_stay") AS "stay" FROM "visits" WHERE "visits"."visit_date" >= '2023-12-09 00:21:07.412345+00:00'::timestamptz GROUP BY "visits"."department"
