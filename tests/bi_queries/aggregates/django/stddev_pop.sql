-- Django: aggregate(StdDev("length_of_stay")) (population standard deviation by default)
-- source: django/django django/db/models/aggregates.py (StdDev: STDDEV_POP unless sample=True)
-- expect: answered
-- range: length_of_stay__stddev 0 15
-- protocol: simple

SELECT STDDEV_POP("visits"."length_of_stay") AS "length_of_stay__stddev" FROM "visits"
