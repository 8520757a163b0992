-- Django: .annotate(month=TruncMonth("visit_date")).values("month").annotate(n=Count("visit_id")); Django >= 4.2 groups by the select index
-- source: django/django django/db/backends/postgresql/operations.py (date_trunc_sql); django/django django/db/models/sql/compiler.py (allows_group_by_select_index)
-- expect: answered
-- protocol: simple

SELECT DATE_TRUNC('month', "visits"."visit_date") AS "month", COUNT("visits"."visit_id") AS "n" FROM "visits" GROUP BY 1 ORDER BY 1 ASC
