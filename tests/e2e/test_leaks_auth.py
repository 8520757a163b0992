"""Authentication pgshroud can stand behind (threat class 21).

When PostgreSQL trusts the connection pgshroud makes (trust in pg_hba.conf,
common when only the proxy can reach the database), relaying the client's
login lets anyone claim any user. With a policy, pgshroud refuses a login
that PostgreSQL completes without any password exchange, for every role,
unless the policy's `authentication.allow_upstream_trust` lists the role.

With --auth-file or --auth-query pgshroud checks the password itself
(SCRAM-SHA-256), and PostgreSQL's trust decides nothing.

Here pgshroud reaches the suite's cluster over its Unix socket, where
pg_hba.conf says `local all all trust`, and clients come as psycopg (libpq),
asyncpg, psql and a raw socket.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import shutil
import subprocess

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.policies.errors import PolicyErrors
from pgshroud.policies.loader import loads_policy
from pgshroud.policies.model import AuthenticationPolicy
from pgshroud.proxy.codec.messages import AuthenticationSASL, ErrorResponse, Query, SASLInitialResponse, SASLResponse
from pgshroud.proxy.ops.catalog import read_catalog
from pgshroud.proxy.wire.client_auth import ClientAuthenticator
from pgshroud.proxy.wire.scram import SCRAM
from tests.rawclient import RawClient, error_fields

TRUST_REFUSED = 'PostgreSQL let user "{user}" in without a password'


@pytest.fixture(scope="module")
def health_catalog(health_db):
    return asyncio.run(read_catalog(health_db))


@pytest.fixture
def trusting(pg, start_proxy, health_policy, health_catalog):
    """pgshroud over the Unix socket, where PostgreSQL trusts every user, with
    the example policy, or with `authentication.allow_upstream_trust` set to
    the roles given."""

    def start(allow: frozenset[str] | None = None):
        policy = health_policy
        if allow is not None:
            policy = dataclasses.replace(health_policy, authentication=AuthenticationPolicy(allow))
        upstream = make_conninfo(host=str(pg.socket_dir), port=pg.port)
        return start_proxy(policy=policy, catalog=health_catalog, upstream_dsn=upstream)

    return start


def psycopg_refusal(dsn: str) -> str:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(dsn, connect_timeout=10)
    return str(info.value)


async def asyncpg_refusal(proxy, user: str) -> asyncpg.PostgresError:
    try:
        conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user=user, password="anything",
                                     database="health", ssl=False, timeout=10)
    except asyncpg.PostgresError as exc:
        return exc
    await conn.close()
    raise AssertionError(f"{user} logged in through a trusting upstream")


@pytest.mark.parametrize("user", ["admin", "clinician", "analyst"])
def test_trust_login_is_refused_for_every_role(trusting, user):
    proxy = trusting()
    message = psycopg_refusal(proxy.dsn(user, "health", password="not-the-password"))
    assert TRUST_REFUSED.format(user=user) in message, message
    assert "allow_upstream_trust" in message  # the hint says what to change
    error = asyncio.run(asyncpg_refusal(proxy, user))
    assert error.sqlstate == "28000"
    assert TRUST_REFUSED.format(user=user) in str(error)


def test_trust_login_is_refused_with_psql(trusting):
    psql = shutil.which("psql")
    if psql is None:
        pytest.fail("psql is not on PATH; install postgresql-client", pytrace=False)
    proxy = trusting()
    result = subprocess.run([psql, "-X", "-A", "-t", "-d", proxy.dsn("admin", "health", password="guess"),
                             "-c", "select ssn from patients limit 1"],
                            capture_output=True, text=True, timeout=30, env={**os.environ, "PGCONNECT_TIMEOUT": "10"}, check=False)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert TRUST_REFUSED.format(user="admin") in result.stderr


def test_trust_login_is_refused_before_any_session_message(trusting):
    """The client gets the FATAL error instead of AuthenticationOk: no
    ParameterStatus, no BackendKeyData, no ReadyForQuery."""
    proxy = trusting()
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send_startup({"user": "admin", "database": "health"})
        first = client.read()
        assert isinstance(first, ErrorResponse), first
        fields = error_fields(first)
        assert client.wait_closed(5)
    assert (fields["S"], fields["C"]) == ("FATAL", "28000")
    assert fields["M"].startswith(TRUST_REFUSED.format(user="admin"))
    assert proxy.session_count == 0


def test_users_the_policy_does_not_name_are_refused_too(trusting):
    message = psycopg_refusal(trusting().dsn("u_trust", "health"))
    assert TRUST_REFUSED.format(user="u_trust") in message


def test_allow_upstream_trust_for_every_role(trusting, raw_health, health_policy):
    proxy = trusting(frozenset(health_policy.roles))
    with psycopg.connect(raw_health) as conn:
        real = sorted(r[0] for r in conn.execute("select ssn from patients"))
    with psycopg.connect(proxy.dsn("admin", "health", password="ignored"), connect_timeout=10) as conn:
        assert sorted(r[0] for r in conn.execute("select ssn from patients")) == real
    with psycopg.connect(proxy.dsn("clinician", "health", password="ignored"), connect_timeout=10) as conn:
        masked = [r[0] for r in conn.execute("select ssn from patients")]
    assert len(masked) == len(real) and set(masked).isdisjoint(real)


def test_allow_upstream_trust_for_one_role_only(trusting):
    proxy = trusting(frozenset({"analyst"}))
    with psycopg.connect(proxy.dsn("analyst", "health", password="ignored"), connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("analyst",)
    for user in ("admin", "clinician"):
        assert TRUST_REFUSED.format(user=user) in psycopg_refusal(proxy.dsn(user, "health"))


def test_password_logins_still_pass_with_the_policy(guarded):
    """Over TCP the suite's cluster asks for scram-sha-256: a real exchange."""
    with psycopg.connect(guarded.dsn("admin", "health"), connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("admin",)
    message = psycopg_refusal(guarded.dsn("admin", "health", password="wrong"))
    assert 'password authentication failed for user "admin"' in message


def test_without_a_policy_trust_is_relayed_as_before(pg, start_proxy):
    proxy = start_proxy(upstream_dsn=make_conninfo(host=str(pg.socket_dir), port=pg.port))
    with psycopg.connect(proxy.dsn("u_md5", password="wrong"), connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("u_md5",)


# -- the policy key ------------------------------------------------------------

POLICY = """\
version: 1
roles:
  admin: {access: raw, users: [admin]}
  analyst: {access: aggregate, users: [analyst]}
"""


def test_policy_key_true_false_and_roles():
    assert loads_policy(POLICY).authentication.allow_upstream_trust == frozenset()
    every = loads_policy(POLICY + "authentication:\n  allow_upstream_trust: true\n")
    assert every.authentication.allow_upstream_trust == {"admin", "analyst"}
    assert every.authentication.allows_upstream_trust(every.roles["admin"])
    none = loads_policy(POLICY + "authentication:\n  allow_upstream_trust: false\n")
    assert none.authentication.allow_upstream_trust == frozenset()
    some = loads_policy(POLICY + "authentication:\n  allow_upstream_trust: [analyst]\n")
    assert some.authentication.allow_upstream_trust == {"analyst"}
    assert not some.authentication.allows_upstream_trust(some.roles["admin"])
    assert not some.authentication.allows_upstream_trust(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("authentication:\n  allow_upstream_trust: yes please\n",
         "p.yaml:6: authentication.allow_upstream_trust: expected true, false, or a list of roles"),
        ("authentication:\n  allow_upstream_trust: [analyst, nurse]\n",
         "p.yaml:6: authentication.allow_upstream_trust[1]: expected a role defined under roles"),
        ("authentication:\n  trust: true\n",
         "p.yaml:6: authentication.trust: expected one of the keys allow_upstream_trust"),
        ("authentication: true\n", "p.yaml:5: authentication: expected a mapping"),
    ],
    ids=["not-a-boolean", "unknown-role", "unknown-key", "not-a-mapping"],
)
def test_policy_key_errors_name_file_line_and_key(text, expected):
    with pytest.raises(PolicyErrors) as info:
        loads_policy(POLICY + text, "p.yaml")
    assert expected in str(info.value), str(info.value)


# -- pgshroud checks the password itself -----------------------------------------


def test_own_authentication_over_a_trusting_upstream(trusting_own_auth):
    """With --auth-file, PostgreSQL's trust no longer decides: claiming the raw
    admin without its password fails with every client, in several disguises."""
    proxy = trusting_own_auth
    for password in ("admin", "wrong", "admin-secret ", "ADMIN-SECRET"):
        message = psycopg_refusal(proxy.dsn("admin", "health", password=password))
        assert 'password authentication failed for user "admin"' in message
    error = asyncio.run(asyncpg_refusal(proxy, "admin"))
    assert error.sqlstate == "28P01"
    # A raw client that skips the exchange, or answers it with a made-up proof.
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send_startup({"user": "admin", "database": "health"})
        assert isinstance(client.read(), AuthenticationSASL)
        client.send(SASLInitialResponse(SCRAM, b"n,,n=,r=abc").encode())
        challenge = client.read()
        nonce = challenge.data.split(b",")[0][2:]
        client.send(SASLResponse(b"c=biws,r=" + nonce + b",p=" + base64.b64encode(bytes(32))).encode())
        first = client.read()
        assert isinstance(first, ErrorResponse) and error_fields(first)["C"] == "28P01"
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send_startup({"user": "admin", "database": "health"})
        assert isinstance(client.read(), AuthenticationSASL)
        client.send(Query("select ssn from patients").encode())
        assert isinstance(client.read(), ErrorResponse)
        assert client.wait_closed(5)
    with psycopg.connect(proxy.dsn("admin", "health", password="admin-secret"), connect_timeout=10) as conn:
        assert conn.execute("select current_user").fetchone() == ("admin",)


@pytest.fixture
def trusting_own_auth(pg, start_proxy, health_policy, health_catalog, tmp_path):
    path = tmp_path / "users.txt"
    path.write_text('"admin" "admin-secret"\n')
    upstream = make_conninfo(host=str(pg.socket_dir), port=pg.port)
    return start_proxy(policy=health_policy, catalog=health_catalog, upstream_dsn=upstream,
                       client_auth=ClientAuthenticator(auth_file=str(path)))
