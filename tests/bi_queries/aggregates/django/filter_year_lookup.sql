-- Django: .filter(visit_date__year=2024).aggregate(Sum("cost")): the year lookup becomes a BETWEEN of dates
-- source: django/django django/db/models/lookups.py (YearLookup: BETWEEN the year's first and last day)
-- expect: answered
-- protocol: simple

SELECT SUM("visits"."cost") AS "cost__sum" FROM "visits" WHERE "visits"."visit_date" BETWEEN '2024-01-01'::date AND '2024-12-31'::date
