-- Django: .annotate(year=ExtractYear("visit_date")).values("year").annotate(total=Sum("cost"))
-- source: django/django django/db/backends/postgresql/operations.py (date_extract_sql: EXTRACT(YEAR FROM ...))
-- expect: answered
-- keys: year
-- protocol: simple

SELECT EXTRACT(YEAR FROM "visits"."visit_date") AS "year", SUM("visits"."cost") AS "total" FROM "visits" GROUP BY 1 ORDER BY 1 ASC
