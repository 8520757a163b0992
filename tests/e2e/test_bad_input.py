"""Clients that break the protocol, stall, vanish or come too many.

A client that sends bytes PostgreSQL would reject gets what PostgreSQL
sends: a FATAL ErrorResponse with SQLSTATE 08P01, then the connection is
closed (and its upstream connection with it). None of this may disturb
another client's session on the same pgshroud, which every test checks
before and after.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid

import psycopg
import pytest

from pgshroud.proxy.codec.messages import DataRow, ErrorResponse, Query
from tests.rawclient import RawClient, ServerClosed, error_fields

MAX_MESSAGE_SIZE = 64 * 1024



class Bystander:
    """A psycopg session that must stay up, on the same backend, throughout."""

    def __init__(self, proxy, user: str = "u_scram") -> None:
        self.conn = psycopg.connect(proxy.dsn(user, application_name="bystander"),
                                    autocommit=True, connect_timeout=5)
        self.backend = self.conn.execute("select pg_backend_pid()").fetchone()[0]
        self.queries = 0

    def check(self) -> None:
        row = self.conn.execute("select pg_backend_pid(), count(*) from items").fetchone()
        assert row == (self.backend, 500)
        self.queries += 1

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def proxy(start_proxy):
    return start_proxy(max_message_size=MAX_MESSAGE_SIZE)


@pytest.fixture
def bystander(proxy):
    watcher = Bystander(proxy)
    watcher.check()
    yield watcher
    watcher.check()
    watcher.close()


@pytest.fixture
def impatient_proxy(start_proxy):
    """pgshroud that gives clients one second from connecting to ReadyForQuery."""
    return start_proxy(startup_timeout=1)


@pytest.fixture
def impatient_bystander(impatient_proxy):
    # trust: nothing slow in its own startup, which has one second too.
    watcher = Bystander(impatient_proxy, "u_trust")
    watcher.check()
    yield watcher
    watcher.check()
    watcher.close()


@pytest.fixture
def app_name() -> str:
    return f"bad-{uuid.uuid4().hex[:12]}"


def backends(pg, app_name: str) -> list[tuple]:
    return pg.execute(f"select pid, state, query from pg_stat_activity where application_name = '{app_name}'")


def wait_no_backend(pg, app_name: str, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not backends(pg, app_name):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"the upstream backend is still there: {backends(pg, app_name)}")


def wait_sessions(proxy, expected: int, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while proxy.session_count != expected:
        assert time.monotonic() < deadline, f"pgshroud still counts {proxy.session_count} sessions, not {expected}"
        time.sleep(0.02)


def wait_active(pg, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(state == "active" for _, state, _ in backends(pg, app_name)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no active statement for {app_name}")


def assert_fatal_and_closed(client: RawClient, sqlstate: str = "08P01") -> dict[str, str]:
    try:
        message = client.read()
    except ServerClosed:
        raise AssertionError("the connection was closed without an ErrorResponse") from None
    assert isinstance(message, ErrorResponse), message
    fields = error_fields(message)
    assert (fields["S"], fields["V"], fields["C"]) == ("FATAL", "FATAL", sqlstate), fields
    assert client.wait_closed(5), "the connection stayed open after a FATAL error"
    return fields


def started_client(proxy, app_name: str) -> RawClient:
    client = RawClient.connect(proxy.host, proxy.port)
    client.startup("u_trust", "app", params={"application_name": app_name})
    assert next(m for m in client.query("select 1") if isinstance(m, DataRow)).values == (b"1",)
    return client


# --------------------------------------------------- after a normal startup

AFTER_STARTUP = {
    "garbage": b"\xde\xad\xbe\xef" * 16,
    "length below 4": b"Q\x00\x00\x00\x02",
    "length 0": b"Q\x00\x00\x00\x00select 1\x00",
    "negative length": b"Q\xff\xff\xff\xfe" + b"x" * 16,
    "oversized length": b"Q" + struct.pack("!I", MAX_MESSAGE_SIZE + 1) + b"select ",
    "unknown message type": b"z\x00\x00\x00\x04",
    "unknown type with payload": b"\x01\x00\x00\x00\x09abcd\x00",
    "password message after startup": b"p\x00\x00\x00\x09abcd\x00",
}


@pytest.mark.parametrize("data", list(AFTER_STARTUP.values()), ids=list(AFTER_STARTUP))
def test_broken_frame_after_startup_is_fatal_08P01(pg, proxy, bystander, app_name, data):
    with started_client(proxy, app_name) as client:
        client.send(data)
        fields = assert_fatal_and_closed(client)
    assert fields["M"]
    bystander.check()
    wait_no_backend(pg, app_name)
    wait_sessions(proxy, 1)  # only the bystander


def frame(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


# Well-framed messages whose payload is malformed. PostgreSQL answers these
# with ERROR 08P01 and goes on; a FATAL 08P01 and a closed connection would
# do as well. What may not happen is a connection dropped without a word.
MALFORMED_PAYLOADS = {
    "Query without its NUL": frame(b"Q", b"select 1"),
    "Query with bytes after its NUL": frame(b"Q", b"select 1\x00xx"),
    "truncated Parse": frame(b"P", b"\x00abc") + frame(b"S", b""),
    "Parse with a parameter count past the end": frame(b"P", b"\x00select 1\x00\x00\x05") + frame(b"S", b""),
    "Execute without its row count": frame(b"E", b"\x00") + frame(b"S", b""),
    "Describe of an unknown kind": frame(b"D", b"Xab\x00") + frame(b"S", b""),
}


@pytest.mark.parametrize("data", list(MALFORMED_PAYLOADS.values()), ids=list(MALFORMED_PAYLOADS))
def test_malformed_payload_gets_08P01(pg, proxy, bystander, app_name, data):
    with started_client(proxy, app_name) as client:
        client.send(data)
        try:
            error = client.read_error()
        except ServerClosed:
            raise AssertionError("the connection was dropped without an ErrorResponse") from None
        fields = error_fields(error)
        assert fields["C"] == "08P01", fields
        if fields["S"] == "FATAL":
            assert client.wait_closed(5)
        else:
            client.read_until_ready()
            assert next(m for m in client.query("select 5") if isinstance(m, DataRow)).values == (b"5",)
    bystander.check()
    wait_no_backend(pg, app_name)


def test_oversized_message_is_refused_before_its_body_arrives(pg, proxy, bystander, app_name):
    with started_client(proxy, app_name) as client:
        client.send(b"Q" + struct.pack("!I", 512 * 1024 * 1024))  # 512 MiB announced, none sent
        assert_fatal_and_closed(client)
    bystander.check()
    wait_no_backend(pg, app_name)


def test_message_at_the_size_limit_is_accepted(proxy, bystander):
    sql = "select length('" + "x" * (MAX_MESSAGE_SIZE - 64) + "')"
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.startup("u_trust", "app")
        messages = client.query(sql)
        assert next(m for m in messages if isinstance(m, DataRow)).values == (str(MAX_MESSAGE_SIZE - 64).encode(),)
    bystander.check()


# ------------------------------------------------------- startup packets

STARTUP_PACKETS = {
    "length 10005": struct.pack("!I", 10_005) + b"\x00\x03\x00\x00",
    "length 100000": struct.pack("!I", 100_000) + b"\x00\x03\x00\x00" + b"x" * 64,
    "length 0": struct.pack("!I", 0),
    "length 4": struct.pack("!I", 4),
    "length 7": struct.pack("!I", 7) + b"\x00\x03\x00",
    "an HTTP request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "parameters without terminator": struct.pack("!I", 17) + b"\x00\x03\x00\x00user\x00u_tr",
}


@pytest.mark.parametrize("data", list(STARTUP_PACKETS.values()), ids=list(STARTUP_PACKETS))
def test_bad_startup_packet_is_fatal_08P01(proxy, bystander, data):
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send(data)
        assert_fatal_and_closed(client)
    bystander.check()


def test_startup_packet_at_the_limit_is_accepted(proxy, bystander):
    # PostgreSQL bounds the body after the length word by 10,000 bytes
    # (ProcessStartupPacket), so a packet of 10,004 bytes in all is accepted.
    filler = "x" * (10_000 - 4 - len("user\0u_trust\0database\0app\0application_name\0\0\0"))
    with RawClient.connect(proxy.host, proxy.port) as client:
        startup = client.startup("u_trust", "app", params={"application_name": filler})
        # PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes.
        assert startup.parameters["application_name"] == filler[:63]
    bystander.check()


# ---------------------------------------------------------------- timeouts


def test_silent_client_is_closed_after_startup_timeout(impatient_proxy, impatient_bystander):
    with RawClient.connect(impatient_proxy.host, impatient_proxy.port) as client:
        started = time.monotonic()
        assert client.wait_closed(5), "a client that sent nothing was never closed"
        elapsed = time.monotonic() - started
    assert 0.8 < elapsed < 3, elapsed
    impatient_bystander.check()


def test_partial_startup_packet_is_closed_after_startup_timeout(impatient_proxy, impatient_bystander):
    with RawClient.connect(impatient_proxy.host, impatient_proxy.port) as client:
        client.send(struct.pack("!I", 40) + b"\x00\x03\x00\x00us")
        started = time.monotonic()
        assert client.wait_closed(5)
        assert 0.8 < time.monotonic() - started < 3
    impatient_bystander.check()


def test_client_stalling_in_authentication_is_closed_after_startup_timeout(impatient_proxy, impatient_bystander):
    with RawClient.connect(impatient_proxy.host, impatient_proxy.port) as client:
        client.send_startup({"user": "u_clear", "database": "app"})
        assert type(client.read()).__name__ == "AuthenticationCleartextPassword"
        started = time.monotonic()
        assert client.wait_closed(5)
        assert 0.8 < time.monotonic() - started < 3
    impatient_bystander.check()


def test_silent_clients_do_not_delay_others(proxy, bystander):
    silent = [RawClient.connect(proxy.host, proxy.port) for _ in range(20)]
    try:
        started = time.monotonic()
        with psycopg.connect(proxy.dsn("u_trust"), autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        assert time.monotonic() - started < 2
        bystander.check()
    finally:
        for client in silent:
            client.close()


# -------------------------------------------------------- upstream trouble


def test_unreachable_upstream_is_named(start_proxy):
    proxy = start_proxy(upstream_dsn="host=127.0.0.1 port=1 sslmode=disable")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("u_scram"), connect_timeout=5)
    assert time.monotonic() - started < 3
    assert "127.0.0.1:1" in str(info.value)
    with RawClient.connect(proxy.host, proxy.port) as client:
        client.send_startup({"user": "u_trust", "database": "app"})
        fields = assert_fatal_and_closed(client, sqlstate="08006")
    assert "127.0.0.1:1" in fields["M"]


# ------------------------------------------------------ vanishing clients


def test_client_gone_mid_query_cancels_upstream(pg, proxy, bystander, app_name):
    client = started_client(proxy, app_name)
    client.send(Query("select pg_sleep(30)").encode())
    wait_active(pg, app_name)
    client.close()
    assert wait_no_backend(pg, app_name) < 5
    bystander.check()
    wait_sessions(proxy, 1)


def test_client_gone_mid_transaction_closes_upstream(pg, proxy, bystander, app_name):
    client = started_client(proxy, app_name)
    assert not [m for m in client.query("begin; select count(*) from items") if isinstance(m, ErrorResponse)]
    assert [state for _, state, _ in backends(pg, app_name)] == ["idle in transaction"]
    client.close()
    wait_no_backend(pg, app_name)
    bystander.check()


def test_client_gone_without_terminate_closes_upstream(pg, proxy, bystander, app_name):
    client = started_client(proxy, app_name)
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    wait_no_backend(pg, app_name)
    bystander.check()


# ------------------------------------------------------ too many clients


def test_max_connections(pg, start_proxy):
    proxy = start_proxy(max_connections=2)
    first = psycopg.connect(proxy.dsn("u_scram"), autocommit=True, connect_timeout=5)
    second = psycopg.connect(proxy.dsn("u_md5"), autocommit=True, connect_timeout=5)
    try:
        with pytest.raises(psycopg.OperationalError, match="sorry, too many clients already"):
            psycopg.connect(proxy.dsn("u_scram"), connect_timeout=5)
        with RawClient.connect(proxy.host, proxy.port) as client:
            client.send_startup({"user": "u_trust", "database": "app"})
            assert_fatal_and_closed(client, sqlstate="53300")
        assert first.execute("select 1").fetchone() == (1,)
        assert second.execute("select 2").fetchone() == (2,)
        second.close()
        wait_sessions(proxy, 1)
        with psycopg.connect(proxy.dsn("u_trust"), autocommit=True, connect_timeout=5) as third:
            assert third.execute("select 3").fetchone() == (3,)
    finally:
        first.close()
        second.close()


def test_refused_startups_do_not_count_against_max_connections(start_proxy):
    proxy = start_proxy(max_connections=2)
    for _ in range(5):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(proxy.dsn("u_scram", password="wrong"), connect_timeout=5)
    with psycopg.connect(proxy.dsn("u_scram"), autocommit=True, connect_timeout=5) as a, \
            psycopg.connect(proxy.dsn("u_md5"), autocommit=True, connect_timeout=5) as b:
        assert a.execute("select 1").fetchone() == b.execute("select 1").fetchone() == (1,)
