"""What drivers run when they connect, and how they read answers, through
pgshroud, as the masked (clinician) and the aggregate (analyst) user of the
healthcare policy.

Django's PostgreSQL backend sets the session's time zone with
`SELECT set_config('TimeZone', %s, false)` (DatabaseOperations.
set_time_zone_sql, run by DatabaseWrapper.ensure_timezone at connect),
with the value bound client-side (a literal) by default and as $1 with
server_side_binding. set_config of a literal name is allowed exactly where
the SET it equals is, and refused where that SET is.

Drivers that read results in binary (asyncpg, pgjdbc's binary transfer) get
pgshroud's own answers in the send format of each column's type.
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


# ------------------------------------------- binary results of pgshroud's own answers

INTERVALS = ["0", "1 year 2 mons 3 days 04:05:06.789", "-1 year -2 mons +3 days -04:05:06.789", "1 day -1 second",
             "-1 day +1 second", "25 hours", "-0.000001 seconds", "178000000 years", "-178000000 years",
             "2562047788 hours 54.775807 seconds", "-3 days", "1 mon", "-1 mon 1 day", "1.5 seconds", "0.5 days",
             "1 year -1 second", "-3 days -0.5 seconds", "7 mons 00:00:00.000001", "-1 year -2 days -3 hours",
             "1 year -2 days 3 hours", "-2 days"]
# (type, its send function, OID, values): the text PostgreSQL prints for each must encode as its *_send function does.
SENT = [
    ("time", "time_send", 1083, ["00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.5"]),
    ("timetz", "timetz_send", 1266,
     ["00:00:00+00", "23:59:59.999999-14:59", "12:34:56.5+05:30", "01:02:03-00:00:07", "10:00+14"]),
    ("uuid", "uuid_send", 2950, ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000"]),
    ("oid", "oidsend", 26, ["0", "4294967295", "1259"]),
    ("date", "date_send", 1082, ["2024-02-29", "0001-01-01 BC", "infinity", "5874897-12-31"]),
    ("timestamp", "timestamp_send", 1114, ["2024-02-29 12:34:56.123456", "4713-01-01 00:00:00 BC", "-infinity"]),
    ("timestamptz", "timestamptz_send", 1184,
     ["2024-02-29 12:34:56.123456+05:30", "1900-01-01 00:00:00+00", "infinity"]),
    ("numeric", "numeric_send", 1700, ["0", "-1234567.000100", "NaN", "1e-20", "99999999999999999999.5"]),
    ("float8", "float8send", 701, ["0", "-1.5e300", "3.141592653589793", "Infinity"]),
    ("int8", "int8send", 20, ["-9223372036854775808", "42"]),
    ("bool", "boolsend", 16, ["true", "false"]),
    ("text", "textsend", 25, ["", "héllo"]),
]


def test_binary_encodings_are_postgresql_send_formats(health_db):
    """What pgshroud sends a binary client for each type an answer it builds can carry is byte for byte
    what PostgreSQL's send function gives, from the text PostgreSQL prints (interval in every
    IntervalStyle, timestamptz in the session's TimeZone)."""
    from pgshroud.proxy.session.answers import BINARY, encode_value

    differ = []
    with psycopg.connect(health_db, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'America/Chicago'")
        for style in ("postgres", "postgres_verbose", "sql_standard", "iso_8601"):
            conn.execute(f"SET IntervalStyle = {style}")
            for value in INTERVALS:
                text, sent = conn.execute("SELECT %s::interval::text, interval_send(%s::interval)",
                                          [value, value]).fetchone()
                if encode_value(text, 1186, BINARY) != bytes(sent):
                    differ.append(f"interval {value!r} as {style}: {text!r}")
        for type_name, send, oid, values in SENT:
            for value in values:
                text, sent = conn.execute(f"SELECT %s::{type_name}::text, {send}(%s::{type_name})",
                                          [value, value]).fetchone()
                if encode_value(text, oid, BINARY) != bytes(sent):
                    differ.append(f"{type_name} {value!r}: {text!r}")
    assert not differ, differ


def asyncpg_rows(dsn: str, sql: str) -> tuple[list[tuple[str, str]], list[tuple]]:
    """Column names and types, and rows, as asyncpg reads them: binary results for every type it knows."""
    import asyncio

    import asyncpg

    async def run():
        params = conninfo_to_dict(dsn)
        conn = await asyncpg.connect(host=params["host"], port=int(params["port"]), user=params["user"],
                                     password=params["password"], database=params["dbname"], ssl=False)
        try:
            await conn.execute("SET TimeZone = 'Asia/Kolkata'")
            statement = await conn.prepare(sql)
            rows = await statement.fetch()
            return [(a.name, a.type.name) for a in statement.get_attributes()], [tuple(r) for r in rows]
        finally:
            await conn.close()

    return asyncio.run(run())


BINARY_READER = "binreader"  # a user of the analyst role with a budget of its own


@pytest.fixture(scope="module")
def ledgered(pg, health_db, health_policy):
    """pgshroud with the healthcare policy and a privacy budget ledger, which private answers need."""
    import asyncio
    import dataclasses

    from psycopg.conninfo import make_conninfo

    from pgshroud.policies.model import Budgets, EpsilonDelta
    from pgshroud.proxy.budget.ledger import PostgresLedger
    from pgshroud.proxy.ops.catalog import read_catalog
    from pgshroud.proxy.session.driver import SessionContext
    from pgshroud.rewriter import plan
    from tests.fix_proxy import RunningProxy, proxy_config

    pg.execute(f"DROP ROLE IF EXISTS {BINARY_READER}")
    pg.execute(f"CREATE ROLE {BINARY_READER} LOGIN PASSWORD '{BINARY_READER}' IN ROLE analyst")
    role = health_policy.roles["analyst"]
    # Budgets of their own: other tests charge the analyst role in the same ledger.
    policy = dataclasses.replace(health_policy, budgets=Budgets(per_user=EpsilonDelta(10_000, 1.0)), roles={
        **health_policy.roles, "analyst": dataclasses.replace(role, users=(*role.users, BINARY_READER))})
    catalog = asyncio.run(read_catalog(health_db))
    shared = SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan,
                            ledger=PostgresLedger(health_db, policy), policy=policy, catalog=lambda: catalog)
    proxy = RunningProxy(shared)
    yield proxy
    proxy.stop()


def test_asyncpg_reads_pgshroud_answers_in_binary(ledgered, pg):
    """A private answer with values of every kind an aggregate or a row-independent value gives,
    read by asyncpg (binary) through pgshroud, decodes to the types of the direct answer and to the
    same values where they carry no noise."""
    sql = ("SELECT current_date AS today, interval '36 hours' AS i, interval '-1 year 3 days' AS j, "
           "localtimestamp AS lt, now() AS t, count(*) AS n, avg(cost) AS mean, count(*) > 0 AS some, "
           "sum(length_of_stay)::float8 AS stay FROM visits")
    direct = make_direct(pg)
    expected_columns, expected_rows = asyncpg_rows(direct, sql)
    columns, rows = asyncpg_rows(ledgered.dsn(BINARY_READER, "health"), sql)
    assert columns == expected_columns
    assert [len(rows)] == [len(expected_rows)] == [1]
    today, i, j, lt, t, count, _mean, some, stay = rows[0]
    assert (today, i, j) == expected_rows[0][:3]
    assert abs((lt - expected_rows[0][3]).total_seconds()) < 600
    assert abs((t - expected_rows[0][4]).total_seconds()) < 600
    assert isinstance(count, int) and isinstance(some, bool) and isinstance(stay, float)
    assert abs(count - expected_rows[0][5]) < expected_rows[0][5] / 2  # noisy, not wild

    grouped = "SELECT department, count(*) AS n, avg(length_of_stay) AS mean FROM visits GROUP BY 1 ORDER BY 1"
    expected_columns, expected_rows = asyncpg_rows(direct, grouped)
    columns, rows = asyncpg_rows(ledgered.dsn(BINARY_READER, "health"), grouped)
    assert columns == expected_columns
    assert {r[0] for r in rows} <= {r[0] for r in expected_rows} and rows


@pytest.mark.parametrize("constant", ["interval '1 day 02:00'", "interval '1:30'", "'P1DT2H'::interval"])
def test_interval_constants_keep_their_value_in_a_private_answer(ledgered, pg, constant):
    """A select-list constant of a private answer is the value PostgreSQL gives what the analyst wrote."""
    sql = f"SELECT {constant} AS i, count(*) AS n FROM visits"
    (expected,) = asyncpg_rows(make_direct(pg), sql)[1]
    (got,) = asyncpg_rows(ledgered.dsn(BINARY_READER, "health"), sql)[1]
    assert got[0] == expected[0]


def make_direct(pg) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(pg.dsn(user="admin", password="admin", dbname="health"), sslmode="disable")


# ------------------------------------------------------ planning, without PostgreSQL


@pytest.mark.parametrize("role", ROLES)
def test_set_config_plans_never_share_a_cached_plan(role):
    """The plan cache keys statements by their text without literals: set_config('TimeZone', 'UTC', false)
    and set_config('search_path', 'x', false) share a key, so set_config's plans must stay out of it."""
    from pgshroud.rewriter import Passthrough, Refuse, plan
    from tests.rewriter_fixtures import context

    for _ in range(2):
        assert plan("SELECT set_config('TimeZone', 'UTC', false)", context(role)) == (
            Passthrough("SELECT set_config('TimeZone', 'UTC', false)"),)
        (refused,) = plan("SELECT set_config('search_path', 'x', false)", context(role))
        assert isinstance(refused, Refuse), refused
