-- Django: Visit.objects.aggregate(Avg("cost")), default alias cost__avg
-- source: django/django django/db/models/aggregates.py (default_alias "<field>__<name>")
-- expect: answered
-- protocol: simple

SELECT AVG("visits"."cost") AS "cost__avg" FROM "visits"
