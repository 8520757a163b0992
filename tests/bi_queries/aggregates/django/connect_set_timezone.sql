-- Django: on every new connection, the session time zone (USE_TZ) is set with set_config and a bound value
-- source: django/django django/db/backends/postgresql/operations.py (set_time_zone_sql: "SELECT set_config('TimeZone', %s, false)"); django/django django/db/backends/postgresql/base.py (_configure_timezone)
-- expect: answered
-- charged: no
-- params: ["UTC"]

SELECT set_config('TimeZone', %s, false)
