-- Django: Visit.objects.values("department").annotate(n=Count("visit_id"))
-- source: django/django django/db/models/sql/compiler.py (GROUP BY the values() columns); django/django django/db/models/aggregates.py (Count)
-- expect: answered
-- protocol: simple

SELECT "visits"."department", COUNT("visits"."visit_id") AS "n" FROM "visits" GROUP BY "visits"."department"
