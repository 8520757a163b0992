"""Serving until a signal, for `pgshroud serve` and `pgshroud demo`: the
catalog keeper and the ledger of the policy, the listener, a reload of the
policy and the auth file on SIGHUP, and draining on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any

import asyncpg

from pgshroud.policies.accounting import has_aggregate_role
from pgshroud.policies.errors import PolicyError
from pgshroud.policies.loader import load_policy
from pgshroud.policies.model import Policy
from pgshroud.proxy.budget.ledger import PostgresLedger
from pgshroud.proxy.ops.access_check import access_warnings
from pgshroud.proxy.ops.catalog import CatalogKeeper, own_conninfo
from pgshroud.proxy.ops.config import ConfigError
from pgshroud.proxy.ops.connect import connect_own
from pgshroud.proxy.ops.metrics import Metrics, MetricsServer
from pgshroud.proxy.session.driver import SessionContext
from pgshroud.proxy.wire.server import Server

log = logging.getLogger("pgshroud")


async def serve_until_signalled(
    shared: SessionContext,
    ready: asyncio.Future[int] | None = None,
    policy_path: str | None = None,
    metrics_listen: tuple[str, int] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain. SIGHUP reloads the policy and the auth file.
    With `metrics_listen`, also serve Prometheus metrics there."""
    metrics_server = None
    if metrics_listen is not None:
        if shared.metrics is None:
            shared.metrics = Metrics()
        if shared.audit is not None:
            shared.metrics.audit_counts = shared.audit.counts
        metrics_server = MetricsServer(shared.metrics, *metrics_listen)
        try:
            await metrics_server.start()
        except OSError as exc:
            raise ConfigError(f"--metrics {metrics_listen[0]}:{metrics_listen[1]}: {exc.strerror or exc}") from None
        log.info("metrics at http://%s:%d/metrics", metrics_listen[0], metrics_server.port)
    try:
        await _serve_until_signalled(shared, ready, policy_path)
    finally:
        if metrics_server is not None:
            await metrics_server.close()


async def _serve_until_signalled(
    shared: SessionContext, ready: asyncio.Future[int] | None, policy_path: str | None
) -> None:
    keeper = None
    ledger = None
    if shared.policy is not None:
        conninfo = own_conninfo(shared.config.upstream, shared.policy)
        keeper = CatalogKeeper(conninfo)
        await keeper.start()
        await log_access_warnings(shared.policy, conninfo)
        shared.catalog = lambda: keeper.catalog  # None while it may be stale
        shared.planner = keeper.guard(shared.planner)
        if shared.ledger is None:
            # Charged to by private answers, under the budgets of the policy of
            # the moment. It connects on first use, so a policy without
            # aggregate roles costs nothing, and one reloaded with them finds
            # it there.
            ledger = PostgresLedger(conninfo, lambda: shared.policy)
            if has_aggregate_role(shared.policy):
                try:
                    await ledger.check()
                except BaseException:
                    keeper.stop()
                    await ledger.close()
                    raise
            shared.ledger = ledger
    server = Server(shared)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"--listen {shared.config.listen_host}:{shared.config.listen_port}: {exc.strerror or exc}") from None
    # The signals are handled before anyone is told the server listens, so
    # that whoever waits for that line can stop it at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    client_auth = shared.config.client_auth
    if policy_path is not None or client_auth is not None:
        loop.add_signal_handler(signal.SIGHUP, lambda: reload(shared, policy_path))
    log.info("listening on %s:%d, upstream %s", shared.config.listen_host, server.port,
             shared.config.upstream.describe())
    if ready is not None:
        ready.set_result(server.port)
    await stop.wait()
    log.info("draining: no new connections, waiting for running statements")
    await server.shutdown()
    if client_auth is not None:
        await client_auth.close()
    if keeper is not None:
        keeper.stop()
    if ledger is not None:
        await ledger.close()


async def log_access_warnings(policy: Policy, conninfo: str) -> None:
    """Log what `pgshroud check --upstream` warns about ways around pgshroud."""
    try:
        conn = await connect_own(conninfo)
        try:
            warnings = await access_warnings(policy, conn)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("could not check pg_hba.conf and privileges for ways around pgshroud: %s", exc)
        return
    for line in warnings:
        log.warning("%s", line)


def reload(shared: SessionContext, policy_path: str | None) -> None:
    """SIGHUP: read the policy and the auth file again."""
    if policy_path is not None:
        reload_policy(shared, policy_path)
    if shared.config.client_auth is not None:
        shared.config.client_auth.reload()


def reload_policy(shared: SessionContext, path: str) -> None:
    """Swap in the policy at `path`; an invalid one keeps the old policy."""
    try:
        policy = load_policy(path)
    except (PolicyError, OSError) as exc:
        log.error("policy reload failed, keeping the current policy: %s", exc)
        return
    shared.policy = policy  # one assignment: each statement sees the old or the new policy, never a mix
    log.info("policy reloaded from %s", path)


def run_event_loop(main_coroutine: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    uvloop.run(main_coroutine)
