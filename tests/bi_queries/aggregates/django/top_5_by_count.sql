-- Django: .values("diagnosis_code").annotate(n=Count("visit_id")).order_by("-n")[:5]
-- source: django/django django/db/models/sql/compiler.py (slicing -> LIMIT)
-- expect: answered
-- ranked: yes
-- protocol: simple

SELECT "visits"."diagnosis_code", COUNT("visits"."visit_id") AS "n" FROM "visits" GROUP BY "visits"."diagnosis_code" ORDER BY "n" DESC LIMIT 5
