"""TLS between clients and pgshroud, and SCRAM across pgshroud's two legs.

Clients reach TLS through SSLRequest or PostgreSQL 17's direct TLS; without
a certificate pgshroud answers SSLRequest 'N' like a server with ssl=off.
GSSAPI encryption is always refused with 'N'. SCRAM channel binding cannot
cross a proxy (it binds to one TLS connection), so the -PLUS mechanisms are
never offered, and a client that could bind ('y' flag) is refused clearly
when the upstream leg is on TLS, where PostgreSQL would take the flag for a
downgrade attack.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
import trustme
from psycopg.conninfo import make_conninfo

from pgshroud.proxy.codec.messages import AuthenticationSASL, DataRow, ErrorResponse, SASLInitialResponse
from pgshroud.proxy.ops.config import server_tls_context
from tests.rawclient import RawClient, error_fields


@pytest.fixture
def tls_proxy(start_proxy, proxy_cert):
    """pgshroud with client TLS; the upstream leg is plaintext unless asked."""

    def start(**kwargs):
        return start_proxy(tls=server_tls_context(str(proxy_cert), str(proxy_cert)), **kwargs)

    return start


@pytest.fixture
def upstream_tls_dsn(pg, pg_ca_file) -> str:
    return make_conninfo(pg.dsn(), sslmode="verify-full", sslrootcert=str(pg_ca_file))


def connect(dsn: str, **extra) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(dsn, **extra), connect_timeout=5, autocommit=True)


def upstream_ssl(conn: psycopg.Connection) -> bool:
    """Whether pgshroud's upstream leg for this session is on TLS, as PostgreSQL sees it."""
    return conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()[0]


def client_context(ca_file: Path, *, alpn: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if alpn:
        ctx.set_alpn_protocols(["postgresql"])
    return ctx


def assert_fails_quickly(dsn: str, *, within: float = 5.0, **extra) -> str:
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as info:
        connect(dsn, **extra)
    assert time.monotonic() - started < within, "the failure took too long: pgshroud left the client waiting"
    return str(info.value)


# ------------------------------------------------------------- SSLRequest


def test_sslrequest_require(tls_proxy):
    proxy = tls_proxy()
    with connect(proxy.dsn("u_scram"), sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("u_scram",)
        assert conn.info.parameter_status("server_version")
        assert not upstream_ssl(conn)


def test_sslrequest_verify_full_against_test_ca(tls_proxy, pg_ca_file):
    proxy = tls_proxy()
    for host in ("127.0.0.1", "localhost"):
        dsn = make_conninfo(proxy.dsn("u_scram"), host=host, sslmode="verify-full", sslrootcert=str(pg_ca_file))
        with connect(dsn) as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select 1").fetchone() == (1,)


def test_verify_full_with_another_ca_fails(tls_proxy, tmp_path):
    proxy = tls_proxy()
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    message = assert_fails_quickly(proxy.dsn("u_scram"), sslmode="verify-full", sslrootcert=str(other_ca))
    assert "certificate verify failed" in message
    with connect(proxy.dsn("u_scram"), sslmode="require") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_asyncpg_over_tls(tls_proxy, pg_ca_file):
    proxy = tls_proxy()

    async def run():
        conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user="u_scram", password="u_scram",
                                     database="app", ssl=client_context(pg_ca_file), timeout=5)
        try:
            return conn.get_server_version() is not None, await conn.fetchval("select current_user"), \
                conn._transport.get_extra_info("ssl_object") is not None
        finally:
            await conn.close()

    assert asyncio.run(run()) == (True, "u_scram", True)


def test_without_certificate_sslrequest_is_answered_n(shroud):
    with connect(shroud.dsn("u_scram"), sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("select 1").fetchone() == (1,)
    message = assert_fails_quickly(shroud.dsn("u_scram"), sslmode="require")
    assert "server does not support SSL, but SSL was required" in message
    with RawClient.connect(shroud.host, shroud.port) as client:
        assert client.ssl_request() == b"N"
        client.startup("u_trust", "app")
        assert next(m for m in client.query("select 7") if isinstance(m, DataRow)).values == (b"7",)


def test_raw_sslrequest_then_startup_inside_tls(tls_proxy, pg_ca_file):
    proxy = tls_proxy()
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.ssl_request() == b"S"
        client.start_tls(client_context(pg_ca_file))
        startup = client.startup("u_md5", "app", password="u_md5")
        assert startup.key is not None
        assert next(m for m in client.query("select 8") if isinstance(m, DataRow)).values == (b"8",)


# ------------------------------------------------------------- direct TLS


def test_direct_tls(tls_proxy, pg_ca_file):
    proxy = tls_proxy()
    dsn = make_conninfo(proxy.dsn("u_scram"), sslnegotiation="direct", sslmode="verify-full",
                        sslrootcert=str(pg_ca_file))
    with connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == ("u_scram",)


def test_direct_tls_raw_client(tls_proxy, pg_ca_file):
    proxy = tls_proxy()
    with RawClient.connect_direct_tls(proxy.host, proxy.port, client_context(pg_ca_file, alpn=True)) as client:
        client.startup("u_clear", "app", password="u_clear")
        assert next(m for m in client.query("select 9") if isinstance(m, DataRow)).values == (b"9",)


def test_direct_tls_without_alpn_is_refused(tls_proxy, pg_ca_file):
    """As in PostgreSQL 17: direct TLS must negotiate ALPN 'postgresql'."""
    proxy = tls_proxy()
    with RawClient.connect_direct_tls(proxy.host, proxy.port, client_context(pg_ca_file)) as client:
        try:
            client.send_startup({"user": "u_trust", "database": "app"})
        except (ssl.SSLError, OSError):
            pass
        assert client.wait_closed(5)
    with connect(proxy.dsn("u_scram"), sslmode="require") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_direct_tls_without_certificate_fails_cleanly(shroud):
    message = assert_fails_quickly(shroud.dsn("u_scram"), sslnegotiation="direct", sslmode="require")
    assert "SSL" in message or "closed" in message or "reset" in message, message
    with connect(shroud.dsn("u_scram")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# ---------------------------------------------------------------- GSSAPI


def test_gssencrequest_is_answered_n(shroud):
    with RawClient.connect(shroud.host, shroud.port) as client:
        assert client.gssenc_request() == b"N"
        # libpq then tries SSLRequest, then plaintext: both on the same socket.
        assert client.ssl_request() == b"N"
        client.startup("u_trust", "app")
        assert next(m for m in client.query("select 10") if isinstance(m, DataRow)).values == (b"10",)


def test_gssencmode_prefer_still_connects(shroud, tls_proxy):
    with connect(shroud.dsn("u_scram"), gssencmode="prefer") as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    proxy = tls_proxy()
    with connect(proxy.dsn("u_scram"), gssencmode="prefer", sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use


def test_gssencrequest_then_sslrequest_gets_tls(tls_proxy, pg_ca_file):
    proxy = tls_proxy()
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.gssenc_request() == b"N"
        assert client.ssl_request() == b"S"
        client.start_tls(client_context(pg_ca_file))
        client.startup("u_trust", "app")
        assert next(m for m in client.query("select 11") if isinstance(m, DataRow)).values == (b"11",)


# ------------------------------------------------ SCRAM and channel binding


def test_scram_client_tls_upstream_plain_channel_binding_prefer(tls_proxy):
    proxy = tls_proxy()
    for user in ("u_scram", "app"):
        with connect(proxy.dsn(user), sslmode="require", channel_binding="prefer") as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select current_user").fetchone() == (user,)
            assert not upstream_ssl(conn)


def test_scram_both_tls_channel_binding_prefer_is_refused_clearly(tls_proxy, upstream_tls_dsn):
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn)
    message = assert_fails_quickly(proxy.dsn("u_scram"), sslmode="require")  # channel_binding=prefer by default
    assert "channel binding" in message
    assert "channel_binding=disable" in message  # the hint says how to configure it
    assert "sslmode=disable" in message


def test_scram_both_tls_refusal_is_28000_fatal(tls_proxy, upstream_tls_dsn, pg_ca_file):
    """The refusal as a raw client sees it, without libpq's formatting."""
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn)
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.ssl_request() == b"S"
        client.start_tls(client_context(pg_ca_file))
        client.send_startup({"user": "u_scram", "database": "app"})
        offer = client.read()
        assert isinstance(offer, AuthenticationSASL)
        assert offer.mechanisms == ("SCRAM-SHA-256",)  # no -PLUS: a proxy cannot bind
        client.send(SASLInitialResponse("SCRAM-SHA-256", b"y,,n=,r=pgshroudtestnonce").encode())
        fields = error_fields(client.read_error())
        assert client.wait_closed(5)
    assert (fields["S"], fields["C"]) == ("FATAL", "28000")
    assert "channel binding" in fields["M"]
    assert "channel_binding=disable" in fields["H"]


def test_scram_both_tls_channel_binding_disable_works(tls_proxy, upstream_tls_dsn):
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn)
    for user in ("u_scram", "app"):
        with connect(proxy.dsn(user), sslmode="require", channel_binding="disable") as conn:
            assert conn.pgconn.ssl_in_use
            assert conn.execute("select current_user").fetchone() == (user,)
            assert upstream_ssl(conn)


def test_scram_both_tls_with_upstream_sslmode_require(pg, tls_proxy):
    proxy = tls_proxy(upstream_dsn=make_conninfo(pg.dsn(), sslmode="require"))
    with connect(proxy.dsn("u_scram"), sslmode="require", channel_binding="disable") as conn:
        assert upstream_ssl(conn)
    message = assert_fails_quickly(proxy.dsn("u_scram"), sslmode="require", channel_binding="prefer")
    assert "channel binding" in message


def test_asyncpg_scram_both_tls(tls_proxy, upstream_tls_dsn, pg_ca_file):
    """asyncpg never binds (its GS2 header is 'n'), so it passes."""
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn)

    async def run():
        conn = await asyncpg.connect(host=proxy.host, port=proxy.port, user="u_scram", password="u_scram",
                                     database="app", ssl=client_context(pg_ca_file), timeout=5)
        try:
            return await conn.fetchval("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        finally:
            await conn.close()

    assert asyncio.run(run()) is True


@pytest.mark.parametrize("upstream", ["plain", "tls"])
def test_channel_binding_require_fails_on_the_client(tls_proxy, upstream_tls_dsn, upstream):
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn if upstream == "tls" else None)
    message = assert_fails_quickly(proxy.dsn("u_scram"), sslmode="require", channel_binding="require")
    assert "channel binding" in message
    # libpq gives up by itself: the server never offered SCRAM-SHA-256-PLUS.
    assert "FATAL" not in message
    message = assert_fails_quickly(proxy.dsn("u_md5"), sslmode="require", channel_binding="require")
    assert "channel binding" in message


@pytest.mark.parametrize("user", ["u_md5", "u_clear", "u_trust"])
def test_password_methods_over_both_tls(tls_proxy, upstream_tls_dsn, user):
    proxy = tls_proxy(upstream_dsn=upstream_tls_dsn)
    with connect(proxy.dsn(user), sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("select current_user").fetchone() == (user,)
        assert upstream_ssl(conn)
    if user != "u_trust":
        message = assert_fails_quickly(proxy.dsn(user, password="wrong"), sslmode="require")
        assert f'password authentication failed for user "{user}"' in message


# ------------------------------------------------- errors inside TLS


def test_oversized_startup_packet_inside_tls_gets_error_over_tls(tls_proxy, pg_ca_file):
    """A protocol violation after the TLS handshake is reported inside TLS."""
    proxy = tls_proxy()
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.ssl_request() == b"S"
        client.start_tls(client_context(pg_ca_file))
        client.send((20_000).to_bytes(4, "big") + b"\x00\x03\x00\x00")
        message = client.read()
        assert isinstance(message, ErrorResponse), message
        fields = error_fields(message)
        assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
        assert client.wait_closed(5)
    with connect(proxy.dsn("u_scram"), sslmode="require") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_silent_client_after_tls_handshake_is_closed(tls_proxy, pg_ca_file):
    proxy = tls_proxy(startup_timeout=1)
    with RawClient.connect(proxy.host, proxy.port) as client:
        assert client.ssl_request() == b"S"
        client.start_tls(client_context(pg_ca_file))
        started = time.monotonic()
        message = client.read()
        assert isinstance(message, ErrorResponse), message
        assert error_fields(message)["C"] == "08P01"
        assert client.wait_closed(5)
        assert time.monotonic() - started < 4
    with connect(proxy.dsn("u_scram"), sslmode="require") as conn:
        assert conn.execute("select 1").fetchone() == (1,)


# ------------------------------------------------- without uvloop

# `pgshroud serve` on plain asyncio, as where uvloop is not installed (the
# package does not require it on Windows).
SERVE_WITHOUT_UVLOOP = "import sys; sys.modules['uvloop'] = None; from pgshroud.proxy.commands.cli import main; sys.exit(main())"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_tls_on_plain_asyncio(pg, proxy_cert, pg_ca_file):
    """A client that sends its StartupMessage right after the TLS handshake,
    as libpq does, must be served whatever event loop pgshroud runs on."""
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-c", SERVE_WITHOUT_UVLOOP, "--log-level", "warning", "serve",
         "--listen", f"127.0.0.1:{port}", "--upstream", make_conninfo(pg.dsn(), sslmode="disable"),
         "--tls-cert", str(proxy_cert), "--tls-key", str(proxy_cert)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and serve.poll() is None, "pgshroud serve did not start"
                time.sleep(0.05)
        for attempt in range(1, 11):
            with RawClient.connect("127.0.0.1", port, timeout=3) as client:
                assert client.ssl_request() == b"S"
                client.start_tls(client_context(pg_ca_file))
                try:
                    client.startup("u_trust", "app")
                except TimeoutError:
                    pytest.fail(f"TLS client {attempt} of 10 got no answer to its StartupMessage within 3s")
        dsn = make_conninfo(host="127.0.0.1", port=port, user="u_scram", password="u_scram", dbname="app",
                            sslmode="verify-full", sslrootcert=str(pg_ca_file))
        with connect(dsn) as conn:
            assert conn.pgconn.ssl_in_use
    finally:
        serve.terminate()
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
