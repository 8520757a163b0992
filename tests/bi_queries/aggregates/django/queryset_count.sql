-- Django: Visit.objects.filter(department="Oncology").count()
-- source: django/django django/db/models/sql/query.py (get_count: COUNT(*) AS "__count")
-- expect: answered
-- protocol: simple

SELECT COUNT(*) AS "__count" FROM "visits" WHERE "visits"."department" = 'Oncology'
