-- Django: Visit.objects.aggregate(Max("visit_date"), Min("visit_date")) (the data's date range for a date picker)
-- source: django/django django/db/models/aggregates.py (Max, Min; default aliases visit_date__max, visit_date__min)
-- expect: answered
-- keys:
-- protocol: simple

SELECT MAX("visits"."visit_date") AS "visit_date__max", MIN("visits"."visit_date") AS "visit_date__min" FROM "visits"
