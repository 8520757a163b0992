-- Django: .aggregate(avg_cost=Avg(Cast("cost", FloatField()))): the cast written (...)::double precision
-- source: django/django django/db/models/functions/comparison.py (Cast on PostgreSQL: (expr)::type)
-- expect: answered
-- protocol: simple

SELECT AVG(("visits"."cost")::double precision) AS "avg_cost" FROM "visits"
