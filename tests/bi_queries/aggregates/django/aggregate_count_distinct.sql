-- Django: Visit.objects.aggregate(Count("patient_id", distinct=True))
-- source: django/django django/db/models/aggregates.py (Count(distinct=True) -> COUNT(DISTINCT ...))
-- expect: answered
-- protocol: simple

SELECT COUNT(DISTINCT "visits"."patient_id") AS "patient_id__count" FROM "visits"
