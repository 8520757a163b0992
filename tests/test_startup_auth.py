"""Startup and authentication through pgshroud.

Authentication is PostgreSQL's own, relayed: every method the suite's
cluster offers (trust, password, md5, scram-sha-256) must succeed with the
right password and fail with PostgreSQL's own error with a wrong one, with
libpq (psycopg) and with asyncpg's own protocol implementation. Startup
parameters reach PostgreSQL; replication connections and nameless users are
refused; protocol versions 3.0 to 3.2 are negotiated the way PostgreSQL 18
negotiates them.
"""

from __future__ import annotations

import asyncio

import asyncpg
import psycopg
import pytest

from proxy.codec.messages import DataRow, ErrorResponse, ReadyForQuery, RowDescription
from tests.rawclient import RawClient, error_fields

PASSWORD_USERS = ["u_clear", "u_md5", "u_scram"]
ALL_USERS = ["u_trust", *PASSWORD_USERS]


def psycopg_connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=10, autocommit=True)


def asyncpg_run(coroutine_function, *args, **kwargs):
    async def main():
        return await asyncio.wait_for(coroutine_function(*args, **kwargs), 20)

    return asyncio.run(main())


async def asyncpg_current_user(host: str, port: int, user: str, password: str, **kwargs) -> str:
    conn = await asyncpg.connect(host=host, port=port, user=user, password=password, database="app",
                                 ssl=False, timeout=10, **kwargs)
    try:
        return await conn.fetchval("select current_user")
    finally:
        await conn.close()


async def asyncpg_error(host: str, port: int, user: str, password: str, **kwargs) -> asyncpg.PostgresError:
    try:
        conn = await asyncpg.connect(host=host, port=port, user=user, password=password, database="app",
                                     ssl=False, timeout=10, **kwargs)
    except asyncpg.PostgresError as exc:
        return exc
    await conn.close()
    raise AssertionError("the connection was expected to fail")


def raw_error(client: RawClient) -> dict[str, str]:
    """The ErrorResponse the server sends next, after which it must close."""
    fields = error_fields(client.read_error())
    assert client.wait_closed(5), "the server kept the connection open after a FATAL error"
    return fields


# ------------------------------------------------------------ authentication


@pytest.mark.parametrize("user", ALL_USERS)
def test_psycopg_right_password(shroud, user):
    with psycopg_connect(shroud.dsn(user)) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (user, user)
        assert conn.execute("select count(*) from items").fetchone()[0] == 500


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_psycopg_wrong_password_gets_postgres_error(pg, shroud, user):
    with pytest.raises(psycopg.OperationalError) as direct:
        psycopg_connect(pg.dsn(user=user, dbname="app", password="wrong") + " sslmode=disable")
    with pytest.raises(psycopg.OperationalError) as proxied:
        psycopg_connect(shroud.dsn(user, password="wrong"))
    expected = f'FATAL:  password authentication failed for user "{user}"'
    assert expected in str(direct.value)
    assert expected in str(proxied.value)


def test_trust_accepts_any_password_as_postgres_does(shroud):
    with psycopg_connect(shroud.dsn("u_trust", password="wrong")) as conn:
        assert conn.execute("select current_user").fetchone() == ("u_trust",)


@pytest.mark.parametrize("user", ALL_USERS)
def test_asyncpg_right_password(shroud, user):
    assert asyncpg_run(asyncpg_current_user, shroud.host, shroud.port, user, user) == user


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_asyncpg_wrong_password_gets_28P01(pg, shroud, user):
    direct = asyncpg_run(asyncpg_error, pg.host, pg.port, user, "wrong")
    proxied = asyncpg_run(asyncpg_error, shroud.host, shroud.port, user, "wrong")
    assert isinstance(proxied, asyncpg.InvalidPasswordError)
    assert proxied.sqlstate == direct.sqlstate == "28P01"
    assert str(proxied) == str(direct) == f'password authentication failed for user "{user}"'


@pytest.mark.parametrize("user", ["u_clear", "u_md5"])
def test_raw_client_password_and_md5(shroud, user):
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.startup(user, "app", password=user)
        rows = [m for m in client.query("select current_user") if isinstance(m, DataRow)]
        assert rows[0].values == (user.encode(),)


def test_unknown_user_gets_postgres_error(shroud):
    error = asyncpg_run(asyncpg_error, shroud.host, shroud.port, "nobody_here", "x")
    # scram-sha-256 for unknown roles: PostgreSQL does not reveal that the role is missing.
    assert error.sqlstate == "28P01"


def test_unknown_database_gets_postgres_error(shroud):
    async def connect():
        try:
            await asyncpg.connect(host=shroud.host, port=shroud.port, user="u_trust", password="x",
                                  database="no_such_db", ssl=False, timeout=10)
        except asyncpg.PostgresError as exc:
            return exc
        raise AssertionError("connected to a database that does not exist")

    error = asyncpg_run(connect)
    assert error.sqlstate == "3D000"
    assert 'database "no_such_db" does not exist' in str(error)


def test_missing_user_gets_28000(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"database": "app"})
        fields = raw_error(client)
    assert fields["S"] == "FATAL"
    assert fields["C"] == "28000"
    assert "no PostgreSQL user name specified" in fields["M"]


# -------------------------------------------------------- startup parameters


def test_application_name_and_options_pass_through(shroud):
    dsn = shroud.dsn("u_scram", application_name="shroud-startup-test",
                     options="-c search_path=pg_catalog,public -c statement_timeout=4321")
    with psycopg_connect(dsn) as conn:
        assert conn.info.parameter_status("application_name") == "shroud-startup-test"
        row = conn.execute(
            "select current_setting('application_name'), current_setting('search_path'),"
            " current_setting('statement_timeout')"
        ).fetchone()
        assert row == ("shroud-startup-test", "pg_catalog,public", "4321ms")
        # application_name is what PostgreSQL itself records for the backend.
        seen = conn.execute(
            "select application_name from pg_stat_activity where pid = pg_backend_pid()"
        ).fetchone()
        assert seen == ("shroud-startup-test",)


def test_asyncpg_server_settings_pass_through(shroud):
    async def settings():
        conn = await asyncpg.connect(
            host=shroud.host, port=shroud.port, user="u_md5", password="u_md5", database="app", ssl=False,
            server_settings={"extra_float_digits": "1", "DateStyle": "SQL, DMY", "application_name": "apg"},
        )
        try:
            return (
                await conn.fetchval("show extra_float_digits"),
                await conn.fetchval("show DateStyle"),
                await conn.fetchval("select current_setting('application_name')"),
                conn.get_settings().DateStyle,
            )
        finally:
            await conn.close()

    assert asyncpg_run(settings) == ("1", "SQL, DMY", "apg", "SQL, DMY")


def test_raw_startup_parameters_pass_through(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", params={
            "DateStyle": "German", "extra_float_digits": "-2", "application_name": "raw-startup",
        })
        assert startup.parameters["DateStyle"] == "German, DMY"
        assert startup.parameters["application_name"] == "raw-startup"
        rows = [m for m in client.query("show extra_float_digits") if isinstance(m, DataRow)]
        assert rows[0].values == (b"-2",)


def test_unknown_guc_in_options_gets_postgres_error(pg, shroud):
    options = "-c pgshroud_no_such_setting=1"
    with pytest.raises(psycopg.OperationalError) as direct:
        psycopg_connect(pg.dsn(user="u_trust", dbname="app") + f" sslmode=disable options='{options}'")
    with pytest.raises(psycopg.OperationalError) as proxied:
        psycopg_connect(shroud.dsn("u_trust", options=options))
    expected = 'unrecognized configuration parameter "pgshroud_no_such_setting"'
    assert expected in str(direct.value)
    assert expected in str(proxied.value)

    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"user": "u_trust", "database": "app", "options": options})
        fields = raw_error(client)
    assert (fields["S"], fields["C"]) == ("FATAL", "42704")


def test_unknown_guc_as_startup_parameter_gets_postgres_error(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"user": "u_trust", "database": "app", "pgshroud_no_such_setting": "1"})
        fields = raw_error(client)
    assert (fields["S"], fields["C"]) == ("FATAL", "42704")
    assert "pgshroud_no_such_setting" in fields["M"]


# --------------------------------------------------------------- replication


@pytest.mark.parametrize("mode", ["database", "true", "on", "1"])
def test_replication_connection_refused(shroud, mode):
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(shroud.dsn("u_scram", replication=mode))
    assert "pgshroud does not accept replication connections" in str(info.value)

    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"user": "u_trust", "database": "app", "replication": mode})
        fields = raw_error(client)
    assert (fields["S"], fields["C"]) == ("FATAL", "0A000")
    assert "replication" in fields["M"]
    assert "PostgreSQL directly" in fields.get("H", "")


def test_replication_false_is_an_ordinary_connection(shroud):
    with psycopg_connect(shroud.dsn("u_scram", replication="false")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# ------------------------------------------------------ protocol negotiation


def query_value(client: RawClient, sql: str) -> bytes | None:
    messages = client.query(sql)
    errors = [m for m in messages if isinstance(m, ErrorResponse)]
    assert not errors, errors[0].fields
    assert isinstance(messages[0], RowDescription)
    return next(m for m in messages if isinstance(m, DataRow)).values[0]


def test_protocol_3_0_gets_4_byte_key_and_no_negotiation(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", minor=0)
        assert startup.negotiation is None
        assert startup.key is not None and len(startup.key.secret) == 4
        assert isinstance(startup.messages[-1], ReadyForQuery)
        assert query_value(client, "select 41 + 1") == b"42"


def test_protocol_3_2_gets_32_byte_key_and_no_negotiation(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", minor=2)
        assert startup.negotiation is None
        assert startup.key is not None and len(startup.key.secret) == 32
        assert query_value(client, "select 41 + 1") == b"42"


def test_protocol_3_3_is_negotiated_down_to_3_2(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", minor=3)
        assert startup.negotiation is not None
        assert startup.negotiation.newest_minor == 2
        assert startup.negotiation.unrecognized == ()
        # NegotiateProtocolVersion comes before authentication, as in PostgreSQL.
        assert startup.messages[0] == startup.negotiation
        assert startup.key is not None and len(startup.key.secret) == 32
        assert query_value(client, "select 41 + 1") == b"42"


@pytest.mark.parametrize("minor", [0, 2])
def test_protocol_options_are_reported_and_not_forwarded(shroud, minor):
    options = {"_pq_.pgshroud_test_option": "on", "_pq_.another": "x"}
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", minor=minor, params={**options, "application_name": "pq-opts"})
        assert startup.negotiation is not None
        assert startup.negotiation.newest_minor == minor
        assert sorted(startup.negotiation.unrecognized) == sorted(options)
        assert startup.parameters["application_name"] == "pq-opts"
        assert query_value(client, "select current_setting('application_name')") == b"pq-opts"


def test_psycopg_with_protocol_3_2(shroud):
    with psycopg_connect(shroud.dsn("u_scram", max_protocol_version="3.2")) as conn:
        assert conn.pgconn.full_protocol_version == 30002
        assert conn.execute("select current_user").fetchone() == ("u_scram",)
    with psycopg_connect(shroud.dsn("u_scram", min_protocol_version="3.2")) as conn:
        assert conn.pgconn.full_protocol_version == 30002


def test_psycopg_default_protocol_is_3_0(shroud):
    with psycopg_connect(shroud.dsn("u_scram")) as conn:
        assert conn.pgconn.full_protocol_version == 30000


@pytest.mark.parametrize("major", [2, 4])
def test_unsupported_major_version_is_fatal(shroud, major):
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"user": "u_trust", "database": "app"}, major=major, minor=0)
        fields = raw_error(client)
    assert fields["S"] == "FATAL"
    assert f"unsupported frontend protocol {major}.0" in fields["M"]


def test_connection_after_refusals_still_works(shroud):
    """The refusals above leave pgshroud serving."""
    with psycopg_connect(shroud.dsn("u_md5")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_client_closing_during_authentication_is_harmless(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.send_startup({"user": "u_scram", "database": "app"})
        auth = client.read()
        assert type(auth).__name__ == "AuthenticationSASL"
    with psycopg_connect(shroud.dsn("u_scram")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
