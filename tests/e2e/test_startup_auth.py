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
import base64
import hashlib
import os
import re
import shutil
import ssl
import subprocess
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pgshroud.proxy.wire.scram as scram_module
import pgshroud.proxy.wire.startup as startup_module
from pgshroud.proxy.codec.messages import (
    AuthenticationSASL,
    AuthenticationSASLContinue,
    DataRow,
    ErrorResponse,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
)
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.ops.config import ConfigError, server_tls_context
from pgshroud.proxy.wire.client_auth import ClientAuthenticator, certificate_end_point, load_auth_file
from pgshroud.proxy.wire.scram import SCRAM, SCRAM_PLUS, Keys, ScramClient, ScramServer, Verifier
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


# ------------------------------------------- pgshroud authenticates clients
#
# With --auth-file / --auth-query pgshroud runs SCRAM-SHA-256 with the
# client itself, then logs in to PostgreSQL as the same user: with the
# password when the auth file holds it, else with the SCRAM keys the
# client's proof revealed, against PostgreSQL's own verifier.

AUTH_QUERY = "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"
TRUST_SECRET = "own-secret of u_trust"  # u_trust's password as pgshroud knows it; PostgreSQL trusts u_trust


def pg_verifier(pg, user: str) -> str:
    return pg.execute(f"select rolpassword from pg_authid where rolname = '{user}'")[0][0]


def quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def auth_file(pg, tmp_path_factory) -> Path:
    """u_scram by PostgreSQL's verifier (the keys path), u_md5 and u_clear by
    password (PostgreSQL asks md5 and cleartext), u_trust by a verifier of
    pgshroud's own (PostgreSQL asks nothing)."""
    path = tmp_path_factory.mktemp("auth") / "userlist.txt"
    path.write_text("\n".join([
        "; pgshroud's users, in PgBouncer's format",
        f"{quoted('u_scram')} {quoted(pg_verifier(pg, 'u_scram'))}",
        f'{quoted("u_md5")} {quoted("u_md5")} "extra fields are ignored"',
        f"{quoted('u_clear')} {quoted('u_clear')}",
        f"{quoted('u_trust')} {quoted(str(Verifier.from_password(TRUST_SECRET)))}",
        "",
    ]))
    return path


@pytest.fixture
def own_auth(start_proxy):
    """pgshroud checking passwords itself; closes its auth-query pool afterwards."""
    made: list[tuple[object, ClientAuthenticator]] = []

    def start(**kwargs):
        config = {k: kwargs.pop(k) for k in ("tls", "upstream_dsn", "policy", "catalog") if k in kwargs}
        authenticator = ClientAuthenticator(**kwargs)
        proxy = start_proxy(client_auth=authenticator, **config)
        made.append((proxy, authenticator))
        return proxy

    yield start
    for proxy, authenticator in made:
        proxy.call(authenticator.close())


OWN_PASSWORDS = {"u_scram": "u_scram", "u_md5": "u_md5", "u_clear": "u_clear", "u_trust": TRUST_SECRET}


@pytest.mark.parametrize("user", list(OWN_PASSWORDS))
def test_auth_file_right_password(own_auth, auth_file, user):
    proxy = own_auth(auth_file=str(auth_file))
    with psycopg_connect(proxy.dsn(user, password=OWN_PASSWORDS[user])) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (user, user)
    assert asyncpg_run(asyncpg_current_user, proxy.host, proxy.port, user, OWN_PASSWORDS[user]) == user


@pytest.mark.parametrize("user", list(OWN_PASSWORDS))
def test_auth_file_wrong_password(own_auth, auth_file, user):
    proxy = own_auth(auth_file=str(auth_file))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(proxy.dsn(user, password="wrong"))
    assert f'FATAL:  password authentication failed for user "{user}"' in str(info.value)
    error = asyncpg_run(asyncpg_error, proxy.host, proxy.port, user, "wrong")
    assert isinstance(error, asyncpg.InvalidPasswordError) and error.sqlstate == "28P01"


def test_trust_user_needs_pgshroud_password(own_auth, auth_file):
    """PostgreSQL trusts u_trust; pgshroud does not, so its own password counts."""
    proxy = own_auth(auth_file=str(auth_file))
    with pytest.raises(psycopg.OperationalError):
        psycopg_connect(proxy.dsn("u_trust", password="u_trust"))


def test_unknown_user_fails_like_a_wrong_password(own_auth, auth_file):
    proxy = own_auth(auth_file=str(auth_file))
    unknown = asyncpg_run(asyncpg_error, proxy.host, proxy.port, "nobody_here", "x")
    known = asyncpg_run(asyncpg_error, proxy.host, proxy.port, "u_scram", "x")
    assert (unknown.sqlstate, type(unknown)) == (known.sqlstate, type(known)) == ("28P01", asyncpg.InvalidPasswordError)
    assert str(unknown) == 'password authentication failed for user "nobody_here"'
    # The salt offered for an unknown user is stable, as a real user's is.
    salts = [server_first(proxy, "nobody_here")[1] for _ in range(2)]
    assert salts[0] == salts[1]
    assert server_first(proxy, "u_scram")[1] != salts[0]


def server_first(proxy, user: str) -> tuple[tuple[str, ...], bytes]:
    """The mechanisms pgshroud offers a user, and the salt of its server-first-message."""
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send_startup({"user": user, "database": "app"})
        offer = client.read()
        assert isinstance(offer, AuthenticationSASL), offer
        scram = ScramClient(password="x")
        client.send(SASLInitialResponse(SCRAM, scram.first()).encode())
        challenge = client.read()
        assert isinstance(challenge, AuthenticationSASLContinue), challenge
        return offer.mechanisms, scram.salt_and_iterations(challenge.data)[0]


def test_psql_with_auth_file(own_auth, auth_file):
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    proxy = own_auth(auth_file=str(auth_file))
    dsn = make_conninfo(host=proxy.host, port=proxy.port, user="u_scram", dbname="app", sslmode="disable")
    ok = subprocess.run([psql, "-X", "-A", "-t", "-d", dsn, "-c", "select current_user"], capture_output=True,
                        text=True, timeout=30, env={**os.environ, "PGPASSWORD": "u_scram"}, check=False)
    assert (ok.returncode, ok.stdout.strip()) == (0, "u_scram"), ok.stderr
    bad = subprocess.run([psql, "-X", "-A", "-t", "-d", dsn, "-c", "select 1"], capture_output=True,
                         text=True, timeout=30, env={**os.environ, "PGPASSWORD": "wrong"}, check=False)
    assert bad.returncode == 2 and 'password authentication failed for user "u_scram"' in bad.stderr


def test_auth_query(own_auth, pg):
    proxy = own_auth(auth_query=AUTH_QUERY, conninfo=make_conninfo(pg.dsn(), sslmode="disable"))
    for user in ("u_scram", "u_trust", "app"):
        assert asyncpg_run(asyncpg_current_user, proxy.host, proxy.port, user, user) == user
        with psycopg_connect(proxy.dsn(user)) as conn:
            assert conn.execute("select current_user").fetchone() == (user,)
        error = asyncpg_run(asyncpg_error, proxy.host, proxy.port, user, "wrong")
        assert error.sqlstate == "28P01"
    # PostgreSQL asks for u_clear's password in clear text, which a verifier cannot give.
    error = asyncpg_run(asyncpg_error, proxy.host, proxy.port, "u_clear", "u_clear")
    assert error.sqlstate == "28000" and "pgshroud holds only a SCRAM verifier" in str(error)
    # u_md5 has an md5 hash in pg_shadow: it cannot check a SCRAM login.
    assert asyncpg_run(asyncpg_error, proxy.host, proxy.port, "u_md5", "u_md5").sqlstate == "28P01"
    assert asyncpg_run(asyncpg_error, proxy.host, proxy.port, "nobody_here", "x").sqlstate == "28P01"


def test_auth_file_first_then_auth_query(own_auth, auth_file, pg):
    proxy = own_auth(auth_file=str(auth_file), auth_query=AUTH_QUERY,
                     conninfo=make_conninfo(pg.dsn(), sslmode="disable"))
    assert asyncpg_run(asyncpg_current_user, proxy.host, proxy.port, "u_trust", TRUST_SECRET) == "u_trust"
    assert asyncpg_run(asyncpg_current_user, proxy.host, proxy.port, "app", "app") == "app"


def test_a_verifier_postgres_does_not_hold_fails_upstream(own_auth, tmp_path):
    """The right password, checked against a verifier with another salt: the
    client's keys cannot log in to PostgreSQL, and the client is told why."""
    path = tmp_path / "users.txt"
    path.write_text(f'"u_scram" "{Verifier.from_password("u_scram")}"\n')
    proxy = own_auth(auth_file=str(path))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(proxy.dsn("u_scram"))
    assert 'pgshroud could not log in to PostgreSQL as user "u_scram"' in str(info.value)
    assert "another salt or iteration count" in str(info.value)


def test_keys_cannot_answer_a_password_request(own_auth, pg, tmp_path):
    """A verifier is no password: when PostgreSQL asks for md5, the login fails clearly."""
    path = tmp_path / "users.txt"
    path.write_text(f'"u_md5" "{Verifier.from_password("u_md5")}"\n')
    proxy = own_auth(auth_file=str(path))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(proxy.dsn("u_md5"))
    assert "PostgreSQL asks for a password, and pgshroud holds only a SCRAM verifier" in str(info.value)


def test_policy_with_own_authentication_over_a_trusting_upstream(own_auth, pg, health_policy, health_db,
                                                                 raw_health, tmp_path):
    """PostgreSQL trusts pgshroud's socket; pgshroud checks the password: the
    raw admin needs its own, and the policy still applies to the others."""
    catalog = asyncio.run(read_catalog(health_db))
    path = tmp_path / "users.txt"
    path.write_text('"admin" "admin-secret"\n"clinician" "clinician-secret"\n')
    proxy = own_auth(auth_file=str(path), policy=health_policy, catalog=catalog,
                     upstream_dsn=make_conninfo(host=str(pg.socket_dir), port=pg.port))
    with psycopg.connect(raw_health) as conn:
        real = sorted(r[0] for r in conn.execute("select ssn from patients"))
    with psycopg_connect(proxy.dsn("admin", "health", password="admin-secret")) as conn:
        assert sorted(r[0] for r in conn.execute("select ssn from patients")) == real
    with psycopg_connect(proxy.dsn("clinician", "health", password="clinician-secret")) as conn:
        assert {r[0] for r in conn.execute("select ssn from patients")}.isdisjoint(real)
    for user in ("admin", "clinician"):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg_connect(proxy.dsn(user, "health", password=user))
        assert f'password authentication failed for user "{user}"' in str(info.value)
    # analyst is not in the file: no login at all.
    with pytest.raises(psycopg.OperationalError):
        psycopg_connect(proxy.dsn("analyst", "health", password="analyst"))


# ----------------------------------------------------------- channel binding


@pytest.fixture
def tls_context(proxy_cert):
    return server_tls_context(str(proxy_cert), str(proxy_cert))


def test_channel_binding_on_the_client_leg(own_auth, auth_file, tls_context, proxy_cert):
    proxy = own_auth(auth_file=str(auth_file), tls=tls_context, end_point=certificate_end_point(str(proxy_cert)))
    for user, password in OWN_PASSWORDS.items():
        with psycopg_connect(proxy.dsn(user, password=password, sslmode="require", channel_binding="require")) as c:
            assert c.pgconn.ssl_in_use
            assert c.execute("select current_user").fetchone() == (user,)
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(proxy.dsn("u_scram", password="wrong", sslmode="require", channel_binding="require"))
    assert 'password authentication failed for user "u_scram"' in str(info.value)
    # Without TLS there is nothing to bind to: -PLUS is not offered, and libpq refuses by itself.
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg_connect(proxy.dsn("u_scram", sslmode="disable", channel_binding="require"))
    assert "channel binding" in str(info.value)
    assert server_first(proxy, "u_scram")[0] == (SCRAM,)


def raw_tls_login(proxy, pg_ca_file, mechanism: str, gs2_header: str, binding: bytes) -> dict[str, str]:
    """A SCRAM login over TLS with the channel binding the test chooses; the error pgshroud answers."""
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.ssl_request() == b"S"
        client.start_tls(ssl.create_default_context(cafile=str(pg_ca_file)))
        client.send_startup({"user": "u_scram", "database": "app"})
        offer = client.read()
        assert offer.mechanisms == (SCRAM_PLUS, SCRAM)
        nonce = "clientnonce"
        client.send(SASLInitialResponse(mechanism, f"{gs2_header}n=,r={nonce}".encode()).encode())
        challenge = client.read()
        if isinstance(challenge, ErrorResponse):
            return error_fields(challenge)
        server_nonce = challenge.data.decode().split(",")[0][2:]
        proof = base64.b64encode(bytes(32)).decode()
        client.send(SASLResponse(f"c={base64.b64encode(binding).decode()},r={server_nonce},p={proof}".encode()).encode())
        return error_fields(client.read_error())


def test_channel_binding_is_checked(own_auth, auth_file, tls_context, proxy_cert, pg_ca_file):
    end_point = certificate_end_point(str(proxy_cert))
    proxy = own_auth(auth_file=str(auth_file), tls=tls_context, end_point=end_point)
    header = "p=tls-server-end-point,,"
    # Data of another certificate: a proof made for another TLS connection.
    fields = raw_tls_login(proxy, pg_ca_file, SCRAM_PLUS, header, header.encode() + bytes(len(end_point)))
    assert (fields["C"], fields["M"]) == ("08P01", "SCRAM channel binding check failed")
    # 'y': "I could bind, but you do not offer it": over TLS pgshroud does, so this is a downgrade.
    fields = raw_tls_login(proxy, pg_ca_file, SCRAM, "y,,", b"y,,")
    assert fields["C"] == "08P01" and fields["M"].startswith("SCRAM channel binding negotiation error")
    fields = raw_tls_login(proxy, pg_ca_file, SCRAM_PLUS, "n,,", b"n,,")
    assert fields["C"] == "08P01" and "does not include channel binding data" in fields["M"]
    fields = raw_tls_login(proxy, pg_ca_file, SCRAM_PLUS, "p=tls-unique,,", b"")
    assert (fields["C"], fields["M"]) == ("08P01", "unsupported SCRAM channel-binding type: 'tls-unique'")
    # The right binding data with a wrong proof is a wrong password.
    fields = raw_tls_login(proxy, pg_ca_file, SCRAM_PLUS, header, header.encode() + end_point)
    assert (fields["C"], fields["M"]) == ("28P01", 'password authentication failed for user "u_scram"')


def test_channel_binding_on_both_legs(own_auth, auth_file, tls_context, proxy_cert, pg, pg_ca_file, monkeypatch):
    """Client to pgshroud and pgshroud to PostgreSQL each bound to their own TLS connection."""
    mechanisms: list[str] = []

    class Recorded(ScramClient):
        @property
        def mechanism(self) -> str:
            mechanisms.append(super().mechanism)
            return super().mechanism

    monkeypatch.setattr(startup_module, "ScramClient", Recorded)
    upstream = make_conninfo(pg.dsn(), sslmode="verify-full", sslrootcert=str(pg_ca_file))
    proxy = own_auth(auth_file=str(auth_file), tls=tls_context, end_point=certificate_end_point(str(proxy_cert)),
                     upstream_dsn=upstream)
    with psycopg_connect(proxy.dsn("u_scram", sslmode="require", channel_binding="require")) as conn:
        assert conn.execute("select current_user, ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() \
            == ("u_scram", True)
    assert mechanisms == [SCRAM_PLUS]


# ------------------------------------------------------------ the auth file


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("u_scram SCRAM", 'expected "user" "password or SCRAM verifier"'),
        ('"u_md5" "md5' + "0" * 32 + '"', "an md5 hash, which cannot check a SCRAM-SHA-256 login"),
        ('"u_scram" "SCRAM-SHA-256$4096:abc"', ("a SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> "
                                               "verifier that does not parse")),
        ('"u_clear" ""', "an empty password"),
    ],
    ids=["unquoted", "md5", "broken-verifier", "empty"],
)
def test_auth_file_errors_name_file_and_line(tmp_path, line, expected):
    path = tmp_path / "users.txt"
    path.write_text(f'# comment\n"ok" "fine"\n{line}\n')
    with pytest.raises(ConfigError) as info:
        load_auth_file(str(path))
    assert str(info.value).startswith(f"{path}:3: "), str(info.value)
    assert expected in str(info.value)
    assert "0" * 32 not in str(info.value)  # a secret is never repeated


def test_auth_file_quotes_and_duplicates(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text('"we""ird" "pass ""word"""\n')
    (user, secret), = load_auth_file(str(path)).items()
    assert (user, secret.password) == ('we"ird', 'pass "word"')
    path.write_text('"a" "x"\n\n"a" "y"\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:3: user 'a' is listed twice \(also on line 1\)"):
        load_auth_file(str(path))


def test_auth_query_needs_a_parameter():
    with pytest.raises(ConfigError, match=r"--auth-query must take the user name as \$1"):
        ClientAuthenticator(auth_query="SELECT usename, passwd FROM pg_shadow", conninfo="host=x")


# ------------------------------------------------------------- SCRAM itself


def test_scram_server_follows_rfc_7677(monkeypatch):
    """The example exchange of RFC 7677, section 3, from the server's side."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = Verifier.from_password("pencil", salt=salt, iterations=4096)
    monkeypatch.setattr(scram_module, "_nonce", lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    server = ScramServer(verifier, verifier, None)
    assert server.first(SCRAM, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO") == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = server.final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                         b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.client_key == Keys.from_password("pencil", salt, 4096).client_key


def test_verifiers_match_postgres(pg):
    """PostgreSQL's verifier for a password, non-ASCII (SASLprep) included, is
    the one pgshroud computes with the same salt."""
    for password in ("u_scram", "pässwörd\u00a0mit\u00adräumen", "Ⅸ"):
        pg.execute("DROP ROLE IF EXISTS shroud_saslprep")
        pg.execute("SET password_encryption = 'scram-sha-256'; CREATE ROLE shroud_saslprep PASSWORD "
                   f"'{password}'")
        theirs = Verifier.parse(pg_verifier(pg, "shroud_saslprep"))
        assert theirs is not None
        assert Verifier.from_password(password, salt=theirs.salt, iterations=theirs.iterations) == theirs
    pg.execute("DROP ROLE shroud_saslprep")


def test_end_point_hash_of_the_test_certificate(proxy_cert):
    """trustme signs with ECDSA and SHA-256: the hash is SHA-256 of the DER."""
    pem = proxy_cert.read_text()
    der = ssl.PEM_cert_to_DER_cert(pem[pem.index("-----BEGIN CERTIFICATE-----"):])
    assert scram_module.signature_algorithm(der) == "1.2.840.10045.4.3.2"
    assert certificate_end_point(str(proxy_cert)) == hashlib.sha256(der).digest()
