"""What drivers run when they connect, through pgshroud, as the masked
(clinician) and the aggregate (analyst) user of the healthcare policy.

Django's PostgreSQL backend sets the session's time zone with
`SELECT set_config('TimeZone', %s, false)` (DatabaseOperations.
set_time_zone_sql, run by DatabaseWrapper.ensure_timezone at connect),
with the value bound client-side (a literal) by default and as $1 with
server_side_binding. set_config of a literal name is allowed exactly where
the SET it equals is, and refused where that SET is.
"""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

pytestmark = pytest.mark.clients

ROLES = ("clinician", "analyst")


def connect(guarded, role: str) -> psycopg.Connection:
    return psycopg.connect(guarded.dsn(role, "health"), autocommit=True)


def show(conn: psycopg.Connection, setting: str) -> str:
    return conn.execute(f"SHOW {setting}").fetchone()[0]


@pytest.mark.parametrize("role", ROLES)
def test_set_config_of_a_literal_setting_does_what_set_does(guarded, role):
    with connect(guarded, role) as conn:
        # psycopg's ClientCursor sends the value as a literal, like Django's default cursor.
        with psycopg.ClientCursor(conn) as cursor:
            cursor.execute("SELECT set_config('TimeZone', %s, false)", ["America/Chicago"])
            assert cursor.fetchone() == ("America/Chicago",)
        assert show(conn, "timezone") == "America/Chicago"
        # The server-side binding of the value: $1.
        assert conn.execute("SELECT set_config('TimeZone', %s, false)", ["Asia/Tokyo"]).fetchone() == ("Asia/Tokyo",)
        assert show(conn, "timezone") == "Asia/Tokyo"
        conn.execute("SELECT pg_catalog.set_config('application_name', 'nightly report', false)")
        assert show(conn, "application_name") == "nightly report"
        conn.execute("BEGIN")
        conn.execute("select set_config('DateStyle', 'SQL, DMY', true)")
        assert show(conn, "datestyle") == "SQL, DMY"
        conn.execute("COMMIT")
        assert show(conn, "datestyle") == "ISO, MDY"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("sql", "words"), [
    ("SELECT set_config('search_path', 'evil, public', false)", 'setting "search_path" cannot be changed'),
    ("SELECT set_config('role', 'admin', false)", 'set_config of "role" is not allowed'),
    ("SELECT set_config('session_authorization', 'admin', false)", "is not allowed"),
    ("SELECT set_config('standard_conforming_strings', 'off', false)", "cannot be changed"),
    ("SELECT set_config('client_encoding', 'SJIS', false)", 'client encoding "SJIS" is not allowed'),
    ("SELECT set_config('pgshroud.epsilon', '5', false)", "pgshroud settings are set with SET"),
])
def test_set_config_is_refused_where_set_is(guarded, role, sql, words):
    with connect(guarded, role) as conn:
        before = show(conn, "search_path")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(sql)
        assert raised.value.sqlstate == "42501", raised.value
        assert words in str(raised.value)
        assert raised.value.diag.message_hint, "the refusal says what to write instead"
        assert show(conn, "search_path") == before
        assert show(conn, "standard_conforming_strings") == "on"


def test_set_config_of_a_timing_setting_is_refused_for_the_aggregate_role(guarded):
    with connect(guarded, "analyst") as conn:
        for setting, value in (("work_mem", "1GB"), ("statement_timeout", "1ms"), ("enable_seqscan", "off")):
            with pytest.raises(psycopg.Error, match="fixed by pgshroud") as raised:
                conn.execute(f"SELECT set_config('{setting}', '{value}', false)")
            assert raised.value.sqlstate == "42501"
    with connect(guarded, "clinician") as conn:
        conn.execute("SELECT set_config('work_mem', '8MB', false)")
        assert show(conn, "work_mem") == "8MB"


@pytest.mark.parametrize("role", ROLES)
def test_set_config_in_any_other_shape_stays_refused(guarded, role):
    """Only the exact call counts: a second column, an expression or an escape string as the name is
    a query that calls set_config, which the function check refuses."""
    with connect(guarded, role) as conn:
        for sql in ("SELECT set_config('TimeZone', 'UTC', false), 1",
                    "SELECT set_config('TimeZone', 'UT' || 'C', false)",
                    "SELECT set_config(E'search_path', 'evil', false)",
                    "SELECT set_config('TimeZone', 'UTC', false) FROM diagnoses"):
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(sql)
            assert raised.value.sqlstate == "42501", sql


@pytest.fixture(scope="module")
def django_settings():
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, TIME_ZONE="UTC", DATABASES={}, INSTALLED_APPS=[])
    import django

    django.setup()
    return settings


def django_connection(guarded, role: str, **options):
    """Django's own PostgreSQL backend, connected as `role` through pgshroud."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    params = conninfo_to_dict(guarded.dsn(role, "health"))
    settings_dict = {
        "ENGINE": "django.db.backends.postgresql", "NAME": params["dbname"], "USER": params["user"],
        "PASSWORD": params["password"], "HOST": params["host"], "PORT": str(params["port"]),
        "OPTIONS": {"sslmode": "disable", **options}, "TIME_ZONE": None, "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False, "AUTOCOMMIT": True, "ATOMIC_REQUESTS": False, "TEST": {},
    }
    return DatabaseWrapper(settings_dict, alias=f"pgshroud_{role}")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("server_side_binding", [False, True])
def test_django_connects_with_its_time_zone(guarded, django_settings, role, server_side_binding):
    """Django sets TimeZone to UTC at connect unless the server already reports UTC: the session
    starts in another zone so that it must."""
    connection = django_connection(guarded, role, options="-c TimeZone=America/Chicago",
                                   server_side_binding=server_side_binding)
    try:
        connection.ensure_connection()
        assert connection.connection.info.parameter_status("TimeZone") == "UTC"
        with connection.cursor() as cursor:
            cursor.execute("SHOW TimeZone")
            assert cursor.fetchone() == ("UTC",)
            cursor.execute("SELECT code FROM diagnoses ORDER BY code LIMIT 1")
            assert cursor.fetchone() is not None
    finally:
        connection.close()
