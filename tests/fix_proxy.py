"""pytest plugin: pgshroud running in front of the suite's PostgreSQL.

The proxy runs in this process, on its own event loop in a thread, so tests
can give it a planner and a ledger of their own; clients reach it over real
TCP sockets like any other client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from psycopg.conninfo import make_conninfo

from pgshroud.policies.model import Policy
from pgshroud.proxy.budget import Ledger
from pgshroud.proxy.commands.pgcluster import ThrowawayCluster
from pgshroud.proxy.ops.config import ServerConfig, UpstreamTarget
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.proxy.wire.server import Server
from pgshroud.rewriter import Planner, plan


class RunningProxy:
    """A pgshroud server on a background event loop."""

    def __init__(self, shared: SessionContext) -> None:
        self.host = shared.config.listen_host
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="pgshroud", daemon=True)
        self._thread.start()
        self.server = Server(shared)
        self.call(self.server.start())
        self.port = self.server.port

    def call(self, coroutine: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def run_soon(self, function: Callable[[], None]) -> None:
        self._loop.call_soon_threadsafe(function)

    def dsn(self, user: str = "app", dbname: str = "app", password: str | None = None, **extra: Any) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=user, dbname=dbname,
            password=user if password is None else password, sslmode=extra.pop("sslmode", "disable"), **extra,
        )

    @property
    def session_count(self) -> int:
        return len(self.server.sessions)

    def stop(self) -> None:
        try:
            self.call(self.server.shutdown(), timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def proxy_config(upstream_dsn: str, **overrides: Any) -> ServerConfig:
    """The configuration of a test's pgshroud. The answer cache is off unless
    a test asks for it (answer_cache_seconds=N): tests that count charges,
    and the privacy audit, need fresh noise at every query."""
    overrides.setdefault("answer_cache_seconds", 0)
    return ServerConfig("127.0.0.1", 0, UpstreamTarget.parse(upstream_dsn), **overrides)


@pytest.fixture(scope="session")
def shroud(pg: ThrowawayCluster) -> Iterator[RunningProxy]:
    """pgshroud without a policy, in front of `pg`, as `pgshroud serve` runs it."""
    proxy = RunningProxy(SessionContext(proxy_config(make_conninfo(pg.dsn(), sslmode="disable")), plan))
    yield proxy
    proxy.stop()


@pytest.fixture
def start_proxy(pg: ThrowawayCluster) -> Iterator[Callable[..., RunningProxy]]:
    """Start a pgshroud with a planner, ledger or config of the test's own."""
    started: list[RunningProxy] = []

    def start(
        planner: Planner = plan,
        *,
        ledger: Ledger | None = None,
        upstream_dsn: str | None = None,
        policy: Policy | None = None,
        catalog: Any = None,
        **config: Any,
    ) -> RunningProxy:
        dsn = upstream_dsn or make_conninfo(pg.dsn(), sslmode="disable")
        shared = SessionContext(proxy_config(dsn, **config), planner, ledger, policy, lambda: catalog)
        proxy = RunningProxy(shared)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="session")
def proxy_cert(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificate and key (one PEM file) for pgshroud's client-facing TLS."""
    path: Path = tmp_path_factory.mktemp("shroud-tls") / "shroud.pem"
    tls_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path
