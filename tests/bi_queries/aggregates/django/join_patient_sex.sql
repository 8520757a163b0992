-- Django: Visit.objects.values("patient__sex").annotate(n=Count("visit_id")) across the foreign key
-- source: django/django django/db/models/sql/compiler.py (INNER JOIN for a non-null foreign key)
-- expect: answered
-- protocol: simple

SELECT "patients"."sex", COUNT("visits"."visit_id") AS "n" FROM "visits" INNER JOIN "patients" ON ("visits"."patient_id" = "patients"."patient_id") GROUP BY "patients"."sex"
