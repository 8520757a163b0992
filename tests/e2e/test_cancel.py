"""Query cancellation through pgshroud.

A client's CancelRequest carries pgshroud's key, never the upstream's; a
matching request makes pgshroud cancel the upstream backend serving that
client. Every client cancel path is driven here: psql's SIGINT, libpq's
legacy PQcancel (`conn.cancel()`) and its encrypted cancel API
(`conn.cancel_safe()`, which opens TLS like the main connection), asyncpg's
timeout, and raw CancelRequests with right and wrong keys of 4 and 32 bytes.
After each, PostgreSQL itself must show no pg_sleep left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import asyncpg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgshroud.proxy.codec.messages import DataRow, ErrorResponse, Query
from pgshroud.proxy.ops.config import server_tls_context
from tests.rawclient import RawClient, error_fields, send_cancel

CANCELED = "canceling statement due to user request"


# ------------------------------------------------------------------ helpers




@pytest.fixture
def app_name() -> str:
    """A distinct application_name, to find this test's backend in pg_stat_activity."""
    return f"cancel-{uuid.uuid4().hex[:12]}"


def running_sleeps(pg, app_name: str) -> list[tuple]:
    return pg.execute(
        "select pid, state, query from pg_stat_activity"
        f" where application_name = '{app_name}' and query like '%pg_sleep%' and state <> 'idle'"
    )


def wait_until_running(pg, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(state == "active" for _, state, _ in running_sleeps(pg, app_name)):
            return
        time.sleep(0.05)
    raise AssertionError(f"pg_sleep of {app_name} never showed up as active in pg_stat_activity")


def assert_no_leftover_sleep(pg, app_name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running_sleeps(pg, app_name):
            return
        time.sleep(0.05)
    raise AssertionError(f"pg_sleep still running upstream: {running_sleeps(pg, app_name)}")


def in_thread_when_running(pg, app_name: str, action) -> threading.Thread:
    errors: list[BaseException] = []

    def run():
        try:
            wait_until_running(pg, app_name)
            action()
        except BaseException as exc:  # noqa: BLE001 - reported by join_checked, whatever it is
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_checked(thread: threading.Thread) -> None:
    thread.join(10)
    assert not thread.is_alive()
    if thread.errors:  # type: ignore[attr-defined]
        raise thread.errors[0]  # type: ignore[attr-defined]


def connect(dsn: str, **extra) -> psycopg.Connection:
    return psycopg.connect(make_conninfo(dsn, **extra), connect_timeout=5, autocommit=True)


# psycopg's conn.cancel() calls libpq's blocking PQcancel() without releasing
# the GIL, so it cannot reach the pgshroud that runs in this test process:
# that client runs in a process of its own.
LEGACY_CANCEL_CLIENT = r"""
import json, sys, threading, time
import psycopg

dsn, admin_dsn, app_name = sys.argv[1:]

def cancel_when_running(conn):
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if admin.execute(
                "select 1 from pg_stat_activity where application_name = %s"
                " and state = 'active' and query like %s", (app_name, "%pg_sleep%")
            ).fetchone():
                conn.cancel()
                return
            time.sleep(0.05)

with psycopg.connect(dsn, application_name=app_name, autocommit=True, connect_timeout=5) as conn:
    thread = threading.Thread(target=cancel_when_running, args=(conn,))
    thread.start()
    started = time.monotonic()
    try:
        conn.execute("select pg_sleep(30)")
        outcome = {"sqlstate": None, "message": "completed"}
    except psycopg.Error as exc:
        outcome = {"sqlstate": exc.sqlstate, "message": str(exc)}
    outcome["elapsed"] = time.monotonic() - started
    thread.join()
    outcome["after"] = conn.execute("select 1").fetchone()[0]
print(json.dumps(outcome))
"""


def assert_legacy_cancel(pg, dsn: str, app_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LEGACY_CANCEL_CLIENT, dsn, pg.admin_dsn(), app_name],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["sqlstate"] == "57014", outcome
    assert CANCELED in outcome["message"]
    assert outcome["elapsed"] < 5
    assert outcome["after"] == 1
    assert_no_leftover_sleep(pg, app_name)


def assert_psycopg_cancel(pg, dsn: str, app_name: str, how: str, **extra) -> None:
    """Run pg_sleep(30) and cancel it from another thread with conn.cancel() or cancel_safe()."""
    if how == "cancel":
        assert_legacy_cancel(pg, make_conninfo(dsn, **extra), app_name)
        return
    with connect(dsn, application_name=app_name, **extra) as conn:
        thread = in_thread_when_running(pg, app_name, getattr(conn, how))
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            conn.execute("select pg_sleep(30)")
        join_checked(thread)
        assert time.monotonic() - started < 5
        assert info.value.sqlstate == "57014"
        assert CANCELED in str(info.value)
        # The session goes on.
        assert conn.execute("select 1").fetchone() == (1,)
    assert_no_leftover_sleep(pg, app_name)


def raw_sleep_and_cancel(pg, proxy, app_name: str, *, minor: int, ssl_first: bool = False) -> dict[str, str]:
    """A raw client runs pg_sleep(30); a raw CancelRequest with its key cancels it."""
    with RawClient.connect(proxy.host, proxy.port) as client:
        startup = client.startup("u_trust", "app", minor=minor, params={"application_name": app_name})
        assert startup.key is not None
        client.send(Query("select pg_sleep(30)").encode())
        wait_until_running(pg, app_name)
        answer = send_cancel(proxy.host, proxy.port, startup.key.process_id, startup.key.secret, ssl_first=ssl_first)
        if ssl_first:
            assert answer == b"N"
        started = time.monotonic()
        messages = client.read_until_ready()
        assert time.monotonic() - started < 5
        errors = [m for m in messages if isinstance(m, ErrorResponse)]
        assert len(errors) == 1, messages
        assert next(m for m in client.query("select 2") if isinstance(m, DataRow)).values == (b"2",)
    assert_no_leftover_sleep(pg, app_name)
    return error_fields(errors[0])


# ---------------------------------------------------------------------- psql


def test_psql_sigint_cancels(pg, shroud, app_name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {"PGAPPNAME": app_name, "LC_ALL": "C", "LANG": "C"}
    psql = subprocess.Popen(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", shroud.dsn("u_scram"), "-c", "select pg_sleep(30)"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        wait_until_running(pg, app_name)
        psql.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = psql.communicate(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    assert CANCELED in err, (out, err)
    assert psql.returncode != 0
    assert_no_leftover_sleep(pg, app_name)


# ------------------------------------------------------------------- psycopg


@pytest.mark.parametrize("how", ["cancel", "cancel_safe"])
def test_psycopg_cancel(pg, shroud, app_name, how):
    assert_psycopg_cancel(pg, shroud.dsn("u_scram"), app_name, how)


@pytest.mark.parametrize("how", ["cancel", "cancel_safe"])
def test_psycopg_cancel_with_protocol_3_2(pg, shroud, app_name, how):
    assert_psycopg_cancel(pg, shroud.dsn("u_scram"), app_name, how, max_protocol_version="3.2")


@pytest.mark.parametrize("how", ["cancel", "cancel_safe"])
def test_psycopg_cancel_over_tls_via_sslrequest(pg, start_proxy, proxy_cert, pg_ca_file, app_name, how):
    proxy = start_proxy(tls=server_tls_context(str(proxy_cert), str(proxy_cert)))
    assert_psycopg_cancel(pg, proxy.dsn("u_scram"), app_name, how, sslmode="verify-full",
                          sslrootcert=str(pg_ca_file))


@pytest.mark.parametrize("how", ["cancel", "cancel_safe"])
def test_psycopg_cancel_over_direct_tls(pg, start_proxy, proxy_cert, pg_ca_file, app_name, how):
    proxy = start_proxy(tls=server_tls_context(str(proxy_cert), str(proxy_cert)))
    assert_psycopg_cancel(pg, proxy.dsn("u_scram"), app_name, how, sslmode="verify-full",
                          sslrootcert=str(pg_ca_file), sslnegotiation="direct")


def test_client_key_names_the_upstream_backend(shroud):
    """The process id is the upstream backend's, as pg_backend_pid() and
    NOTIFY report it; the secret is pgshroud's own (the wrong-key tests
    below show that only pgshroud's secret cancels)."""
    with connect(shroud.dsn("u_scram")) as conn:
        (backend_pid,) = conn.execute("select pg_backend_pid()").fetchone()
        assert conn.info.backend_pid == backend_pid


def test_cancel_while_idle_is_harmless(shroud):
    with connect(shroud.dsn("u_scram")) as conn:
        conn.cancel_safe()
        time.sleep(0.2)
        assert conn.execute("select 3").fetchone() == (3,)


# ----------------------------------------------------------------- raw client


def test_raw_cancel_protocol_3_0(pg, shroud, app_name):
    fields = raw_sleep_and_cancel(pg, shroud, app_name, minor=0)
    assert (fields["S"], fields["C"], fields["M"]) == ("ERROR", "57014", CANCELED)


def test_raw_cancel_protocol_3_2_with_32_byte_key(pg, shroud, app_name):
    fields = raw_sleep_and_cancel(pg, shroud, app_name, minor=2)
    assert (fields["C"], fields["M"]) == ("57014", CANCELED)


def test_cancel_after_sslrequest_answered_n(pg, shroud, app_name):
    fields = raw_sleep_and_cancel(pg, shroud, app_name, minor=0, ssl_first=True)
    assert fields["C"] == "57014"


@pytest.mark.parametrize("minor", [0, 2])
def test_cancel_with_wrong_key_does_nothing(pg, shroud, app_name, minor):
    with RawClient.connect(shroud.host, shroud.port) as client:
        startup = client.startup("u_trust", "app", minor=minor, params={"application_name": app_name})
        key = startup.key
        assert key is not None
        client.send(Query("select pg_sleep(1.5), 'slept'").encode())
        wait_until_running(pg, app_name)
        wrong_secret = bytes(b ^ 0xFF for b in key.secret)
        for process_id, secret in [
            (key.process_id, wrong_secret),
            (key.process_id ^ 1, key.secret),
            (key.process_id, key.secret[:-1] + bytes([key.secret[-1] ^ 1])),
            (key.process_id, key.secret + b"\x00" * 4),  # right bytes, wrong length
        ]:
            send_cancel(shroud.host, shroud.port, process_id, secret)
        messages = client.read_until_ready()
        assert not [m for m in messages if isinstance(m, ErrorResponse)], messages
        assert next(m for m in messages if isinstance(m, DataRow)).values == (b"", b"slept")
    assert_no_leftover_sleep(pg, app_name)


def test_cancel_key_of_a_closed_session_does_nothing(pg, shroud, app_name):
    with RawClient.connect(shroud.host, shroud.port) as old:
        old_key = old.startup("u_trust", "app").key
        old.terminate()
    with RawClient.connect(shroud.host, shroud.port) as client:
        client.startup("u_trust", "app", params={"application_name": app_name})
        client.send(Query("select pg_sleep(1), 'slept'").encode())
        wait_until_running(pg, app_name)
        send_cancel(shroud.host, shroud.port, old_key.process_id, old_key.secret)
        messages = client.read_until_ready()
        assert not [m for m in messages if isinstance(m, ErrorResponse)], messages


# -------------------------------------------------------------------- asyncpg


def test_asyncpg_timeout_cancels_and_connection_stays_usable(pg, shroud, app_name):
    async def run():
        conn = await asyncpg.connect(host=shroud.host, port=shroud.port, user="u_scram", password="u_scram",
                                     database="app", ssl=False, server_settings={"application_name": app_name})
        try:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetchval("select pg_sleep(30)", timeout=0.5)
            elapsed = time.monotonic() - started
            value = await asyncio.wait_for(conn.fetchval("select 40 + 2"), 5)
            return elapsed, value
        finally:
            await conn.close()

    elapsed, value = asyncio.run(run())
    assert elapsed < 5
    assert value == 42
    assert_no_leftover_sleep(pg, app_name)
