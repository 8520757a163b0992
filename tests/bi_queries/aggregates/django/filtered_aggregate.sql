-- Django: aggregate(er=Count("visit_id", filter=Q(department="Emergency")), total=Count("visit_id")) (FILTER on PostgreSQL)
-- source: django/django django/db/models/aggregates.py (filter -> FILTER (WHERE ...) where supported)
-- expect: answered
-- protocol: simple

SELECT COUNT("visits"."visit_id") FILTER (WHERE "visits"."department" = 'Emergency') AS "er", COUNT("visits"."visit_id") AS "total" FROM "visits"
