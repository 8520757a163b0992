-- Django: the same set-up with client-side binding (the psycopg 3 default), the value inlined
-- source: django/django django/db/backends/postgresql/operations.py (set_time_zone_sql)
-- expect: answered
-- charged: no
-- protocol: simple

SELECT set_config('TimeZone', 'UTC', false)
